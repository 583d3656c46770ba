//! `titus-api-lambda`: the API. Under Lambda (`AWS_LAMBDA_RUNTIME_API` set) it serves API Gateway
//! HTTP API events; with `--listen ADDR` it serves plain HTTP, as the local stack and the tests do.
//! The control plane, the configuration and the router are built once, before the first request.

use anyhow::Context as _;
use clap::Parser;
use titus_api::{lambda_service, router, serve, ApiConfig, AppState};
use titus_aws::{AwsClients, Names};

#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The stage whose tables, queues and parameters to use.
    #[arg(long, env = "TITUS_STAGE", default_value = titus_aws::resources::DEFAULT_STAGE)]
    stage: String,
    /// Serve plain HTTP on this address (e.g. 127.0.0.1:7001; port 0 picks a free one) instead of
    /// Lambda events. The bound address is printed as `listening on ADDR`.
    #[arg(long, env = "TITUS_API_LISTEN")]
    listen: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let in_lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
    if in_lambda {
        titus_app::lambda::init_logging();
    } else {
        init_local_logging();
    }
    let args = Args::parse();
    let names = Names::new(&args.stage).map_err(anyhow::Error::msg)?;
    let clients = AwsClients::from_env().await;
    let control = titus_app::control_plane(&clients, &args.stage)
        .await
        .with_context(|| format!("loading the settings of stage {:?}", args.stage))?;
    let config = ApiConfig::load(&clients.ssm, &names)
        .await
        .with_context(|| format!("loading the API's configuration for stage {:?}", args.stage))?;
    let limiter = titus_aws::DynamoRateLimiter::new(clients.dynamodb.clone(), &names);
    let control = std::sync::Arc::new(control);
    let app = router(
        AppState::new(control.clone(), config, Some(std::sync::Arc::new(limiter))).with_task_logs(
            std::sync::Arc::new(titus_aws::CloudWatchTaskLogs::new(clients.logs.clone())),
        ),
    );

    match (args.listen, in_lambda) {
        (Some(address), _) => {
            let listener = tokio::net::TcpListener::bind(&address)
                .await
                .with_context(|| format!("binding {address}"))?;
            println!("listening on {}", listener.local_addr()?);
            serve(listener, app, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("serving HTTP")
        }
        (None, true) => {
            // After each request, what it counted, as one EMF line.
            let stage = args.stage.clone();
            let app = app.layer(axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| {
                    let (control, stage) = (control.clone(), stage.clone());
                    async move {
                        let response = next.run(request).await;
                        titus_app::lambda::emit_metrics(&control, &stage);
                        response
                    }
                },
            ));
            lambda_http::run(lambda_service(app))
                .await
                .map_err(|e| anyhow::anyhow!("Lambda runtime: {e}"))
        }
        (None, false) => anyhow::bail!(
            "not running under Lambda (AWS_LAMBDA_RUNTIME_API is unset); pass --listen ADDR to serve \
             plain HTTP, e.g. --listen 127.0.0.1:{}",
            titus_api::DEFAULT_LOCAL_PORT
        ),
    }
}

/// Plain-text logs on stderr outside Lambda; `RUST_LOG` sets the filter.
fn init_local_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
