//! The network fixtures of the shared test support: an outside host that the host and
//! containers on Docker's bridge reach, a loopback address, and the HTTP probe.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bollard::models::ContainerCreateBody;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Sends a bare HTTP/1.0 GET over TCP and returns the whole answer.
async fn http_get(addr: SocketAddr) -> String {
    let mut stream =
        tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connecting to {addr} timed out"))
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut answer))
        .await
        .expect("the answer within 3s")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn the_outside_host_answers_the_host() {
    let outside = support::OutsideHost::start().await;
    assert!(
        outside.url().starts_with("http://10.201."),
        "{}",
        outside.url()
    );
    assert!(outside.url().ends_with(":8080/"), "{}", outside.url());
    let answer = http_get(outside.socket_addr()).await;
    assert!(
        answer.starts_with("HTTP/1.") && answer.contains(" 200 "),
        "{answer}"
    );
    assert!(answer.ends_with(support::OUTSIDE_BODY), "{answer}");
}

#[tokio::test]
async fn a_container_on_the_default_bridge_reaches_the_outside_host() {
    let runtime = support::docker().await;
    let outside = support::OutsideHost::start().await;
    let body = ContainerCreateBody {
        image: Some(support::TEST_IMAGE.to_owned()),
        cmd: Some(
            ["timeout", "5", "wget", "-q", "-O", "-", &outside.url()]
                .map(str::to_owned)
                .to_vec(),
        ),
        ..Default::default()
    };
    let run = support::run_container(&runtime, &support::agent_id("outside"), body).await;
    assert_eq!(run.exit_code, 0, "{run:?}");
    assert_eq!(run.stdout, support::OUTSIDE_BODY, "{run:?}");
}

#[tokio::test]
async fn an_outside_host_is_removed_when_dropped() {
    let outside = support::OutsideHost::start().await;
    let namespace = outside.namespace().to_owned();
    let addr = outside.socket_addr();
    let n = addr.ip().to_string().split('.').nth(2).unwrap().to_owned();
    drop(outside);
    let namespaces = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&namespaces.stdout).contains(&namespace),
        "namespace {namespace} is left"
    );
    let link = std::process::Command::new("ip")
        .args(["link", "show", &format!("tout{n}h")])
        .output()
        .unwrap();
    assert!(!link.status.success(), "the veth tout{n}h is left");
    // Connecting proves nothing here: this sandbox's default gateway accepts any TCP connection
    // (and answers `426 Upgrade Required`). What must be gone is the outside host's answer.
    let connect =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await;
    if let Ok(Ok(mut stream)) = connect {
        let _ = stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            !answer.contains(support::OUTSIDE_BODY),
            "{addr} still serves the outside host: {answer}"
        );
    }
}

#[tokio::test]
async fn the_probe_answers_and_counts_connections_until_dropped() {
    let probe = support::HttpProbe::bind("127.0.0.1:0".parse().unwrap()).await;
    let addr = probe.addr();
    assert_ne!(addr.port(), 0);
    assert_eq!(probe.connections(), 0);
    for expected in 1..=2 {
        let answer = http_get(addr).await;
        assert_eq!(answer.as_bytes(), support::PROBE_RESPONSE);
        assert_eq!(probe.connections(), expected);
    }
    drop(probe);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the probe still listens on {addr}"
    );
}

#[tokio::test]
async fn a_loopback_address_is_added_once_and_serves_a_probe() {
    const ADDRESS: &str = "10.203.0.1";
    support::ensure_loopback_address(ADDRESS);
    // Idempotent.
    support::ensure_loopback_address(ADDRESS);
    let shown = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", "lo"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert_eq!(
        shown.matches(&format!("{ADDRESS}/32")).count(),
        1,
        "{shown}"
    );
    let probe = support::HttpProbe::bind(format!("{ADDRESS}:0").parse().unwrap()).await;
    let answer = http_get(probe.addr()).await;
    assert!(answer.ends_with("probe-ok"), "{answer}");
    assert_eq!(probe.connections(), 1);
    let _ = std::process::Command::new("ip")
        .args(["addr", "del", &format!("{ADDRESS}/32"), "dev", "lo"])
        .status();
}
