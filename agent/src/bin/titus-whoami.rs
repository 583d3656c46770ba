//! `titus-whoami`: prints the AWS identity a task's container gets, so that a user can check
//! which role their job runs with (run it as the task's command, or inside a running task).
//!
//! It finds credentials with the AWS SDK's default chain and asks STS `GetCallerIdentity`, and
//! honours `AWS_ENDPOINT_URL`, `AWS_REGION` and the other settings like any SDK program. The
//! SDK's HTTPS client needs the image's CA certificates (`/etc/ssl/certs/ca-certificates.crt`
//! or `SSL_CERT_FILE`), even for a plain-HTTP endpoint.
//!
//! Output, one line on stdout: `arn=<caller ARN>` and exit code 0, or
//! `error=<the error with its causes>` and exit code 2 (also when the SDK panics, as it does
//! in an image without CA certificates).

use std::process::ExitCode;

use aws_sdk_sts::error::DisplayErrorContext;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // In a task of its own, so that a panic of the SDK is reported like any error.
    let outcome = match tokio::spawn(caller_arn()).await {
        Ok(outcome) => outcome,
        Err(join) => Err(match join.try_into_panic() {
            Ok(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                format!("the AWS SDK panicked: {message}")
            }
            Err(join) => join.to_string(),
        }),
    };
    match outcome {
        Ok(arn) => {
            println!("arn={arn}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            println!("error={}", one_line(&error));
            ExitCode::from(2)
        }
    }
}

/// The ARN STS reports for the credentials the default chain finds.
async fn caller_arn() -> Result<String, String> {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let identity = aws_sdk_sts::Client::new(&config)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| DisplayErrorContext(&e).to_string())?;
    Ok(identity.arn().unwrap_or_default().to_owned())
}

/// The text with its line breaks (and runs of white space) folded into single spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
