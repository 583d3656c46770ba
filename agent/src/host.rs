//! What the agent learns about its host at start: its identity on EC2 (instance metadata,
//! IMDSv2) and its capacity (CPUs, memory, disk).

use std::time::Duration;

use aws_config::imds;
use aws_config::provider_config::ProviderConfig;
use aws_config::BehaviorVersion;
use titus_core::Resources;

/// The link-local address of EC2's instance metadata service.
pub const IMDS_ENDPOINT: &str = "http://169.254.169.254";

/// Why the host could not be measured or identified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    #[error(
        "instance metadata ({endpoint}) did not answer {path}: {message}; \
         set TITUS_AGENT_ID when not running on EC2"
    )]
    Metadata {
        endpoint: String,
        path: &'static str,
        message: String,
    },
    #[error("cannot measure {what}: {message}; set {variable} to configure it")]
    Measure {
        what: &'static str,
        message: String,
        variable: &'static str,
    },
}

/// Who the host is on EC2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceIdentity {
    pub instance_id: String,
    pub zone: String,
    pub instance_type: String,
}

/// Reads the instance id, zone and type with IMDSv2 (a session token from `PUT
/// /latest/api/token`, then `GET`s that carry it). Each request gets `timeout`, once: off EC2
/// nothing answers, and start-up should say so within seconds rather than retry.
pub async fn instance_identity(
    endpoint: &str,
    timeout: Duration,
) -> Result<InstanceIdentity, HostError> {
    let metadata_error = |path: &'static str, message: String| HostError::Metadata {
        endpoint: endpoint.to_owned(),
        path,
        message,
    };
    let client = imds::Client::builder()
        .configure(
            &ProviderConfig::default().with_behavior_version(Some(BehaviorVersion::latest())),
        )
        .endpoint(endpoint)
        .map_err(|e| metadata_error("(endpoint)", e.to_string()))?
        .connect_timeout(timeout)
        .read_timeout(timeout)
        .operation_timeout(timeout * 3)
        .max_attempts(1)
        .build();
    let get = |path: &'static str| {
        let client = client.clone();
        async move {
            client
                .get(path)
                .await
                .map(|value| String::from(value).trim().to_owned())
                .map_err(|e| {
                    metadata_error(
                        path,
                        aws_sdk_ssm::error::DisplayErrorContext(&e).to_string(),
                    )
                })
        }
    };
    Ok(InstanceIdentity {
        instance_id: get("/latest/meta-data/instance-id").await?,
        zone: get("/latest/meta-data/placement/availability-zone").await?,
        instance_type: get("/latest/meta-data/instance-type").await?,
    })
}

/// The host's CPUs (as millicores), memory and the size of the disk under `disk_path`. Network
/// and GPUs cannot be measured here and come from configuration.
pub fn measure_capacity(disk_path: &str) -> Result<Resources, HostError> {
    let cpus = std::thread::available_parallelism()
        .map_err(|e| HostError::Measure {
            what: "CPUs",
            message: e.to_string(),
            variable: "TITUS_AGENT_CPU_MILLIS",
        })?
        .get() as u64;
    let meminfo = std::fs::read_to_string("/proc/meminfo").map_err(|e| HostError::Measure {
        what: "memory",
        message: format!("/proc/meminfo: {e}"),
        variable: "TITUS_AGENT_MEMORY_MB",
    })?;
    let memory_mb = memory_total_mb(&meminfo).ok_or_else(|| HostError::Measure {
        what: "memory",
        message: "/proc/meminfo has no MemTotal line".to_owned(),
        variable: "TITUS_AGENT_MEMORY_MB",
    })?;
    let disk = rustix::fs::statvfs(disk_path).map_err(|e| HostError::Measure {
        what: "disk",
        message: format!("statvfs({disk_path}): {e}"),
        variable: "TITUS_AGENT_DISK_MB",
    })?;
    let disk_mb = disk.f_blocks.saturating_mul(disk.f_frsize) / (1024 * 1024);
    Ok(Resources {
        cpu_millis: cpus * 1000,
        memory_mb,
        disk_mb,
        network_mbps: 0,
        gpu: 0,
    })
}

/// `MemTotal` of /proc/meminfo, in MiB.
fn memory_total_mb(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut fields = line.split_whitespace().skip(1);
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") | None => Some(value / 1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn meminfo_total_is_read_in_mebibytes() {
        let text = "MemTotal:       24681844 kB\nMemFree:        1 kB\n";
        assert_eq!(memory_total_mb(text), Some(24_103));
        assert_eq!(memory_total_mb("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn this_host_has_some_capacity() {
        let capacity = measure_capacity("/").unwrap();
        assert!(capacity.cpu_millis >= 1000);
        assert!(capacity.memory_mb > 0);
        assert!(capacity.disk_mb > 0);
    }

    /// A stand-in for IMDS that insists on IMDSv2: metadata only for requests with the token.
    async fn imds_stub(requests: Arc<Mutex<Vec<String>>>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let requests = requests.clone();
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 8192];
                    let mut read = 0;
                    loop {
                        let n = socket.read(&mut buffer[read..]).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        read += n;
                        let text = String::from_utf8_lossy(&buffer[..read]).to_string();
                        let Some(end) = text.find("\r\n\r\n") else {
                            continue;
                        };
                        let head = text[..end].to_ascii_lowercase();
                        let request_line = text.lines().next().unwrap_or_default().to_owned();
                        requests.lock().unwrap().push(request_line.clone());
                        let has_token = head.contains("x-aws-ec2-metadata-token: stub-token");
                        let (status, body) =
                            match request_line.split(' ').take(2).collect::<Vec<_>>()[..] {
                                ["PUT", "/latest/api/token"]
                                    if head.contains("x-aws-ec2-metadata-token-ttl-seconds") =>
                                {
                                    ("200 OK", "stub-token")
                                }
                                ["GET", path] if has_token => match path {
                                    "/latest/meta-data/instance-id" => {
                                        ("200 OK", "i-0123456789abcdef0")
                                    }
                                    "/latest/meta-data/placement/availability-zone" => {
                                        ("200 OK", "us-east-1c")
                                    }
                                    "/latest/meta-data/instance-type" => ("200 OK", "m5.xlarge"),
                                    _ => ("404 Not Found", ""),
                                },
                                _ => ("401 Unauthorized", ""),
                            };
                        let response = format!(
                            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nx-aws-ec2-metadata-token-ttl-seconds: 21600\r\n\r\n{body}",
                            body.len()
                        );
                        if socket.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                        buffer.fill(0);
                        read = 0;
                    }
                });
            }
        });
        format!("http://{address}")
    }

    #[tokio::test]
    async fn the_instance_identity_comes_from_imdsv2_with_a_token() {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let endpoint = imds_stub(requests.clone()).await;

        let identity = instance_identity(&endpoint, Duration::from_secs(1))
            .await
            .unwrap();

        assert_eq!(
            identity,
            InstanceIdentity {
                instance_id: "i-0123456789abcdef0".to_owned(),
                zone: "us-east-1c".to_owned(),
                instance_type: "m5.xlarge".to_owned(),
            }
        );
        let requests = requests.lock().unwrap().clone();
        assert!(
            requests[0].starts_with("PUT /latest/api/token"),
            "{requests:?}"
        );
    }

    #[tokio::test]
    async fn a_silent_metadata_service_fails_within_the_timeout() {
        // Accepts connections and never answers: what a firewalled link-local address does.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let _held = tokio::spawn(async move {
            let mut sockets = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                sockets.push(socket);
            }
        });

        let outcome = tokio::time::timeout(
            Duration::from_secs(10),
            instance_identity(&endpoint, Duration::from_millis(300)),
        )
        .await;

        let err = outcome.expect("gives up rather than hangs").unwrap_err();
        assert!(err.to_string().contains("TITUS_AGENT_ID"), "{err}");
    }
}
