//! The application as its binaries start it. Every Lambda main and `titus local up` build the
//! control plane here, the same way: the stage's ports on AWS ([`AwsPorts::for_stage`]) and its
//! settings from SSM with the process's environment over them ([`settings::load`]). So the local
//! stack runs on the same SSM settings as the deployed functions.
//!
//! [`lambda`] holds what every function shares besides: logging, SQS events in and partial
//! batch failures out, and the errors Lambda reports with their stable types; [`pump`] feeds
//! queues to the use cases where no event source mapping does (the local stack, tests).

pub mod lambda;
pub mod pump;
pub mod settings;
pub mod streams;

use titus_aws::{AwsClients, AwsPorts, Names};
use titus_control::ControlPlane;

pub use settings::{ScalerConfigSource, StartError};

/// The control plane of stage `stage` on AWS (or the emulator `AWS_ENDPOINT_URL` names), with
/// its settings read once from SSM and overridden by this process's `TITUS_STATUS_*` and
/// `TITUS_SCHEDULER_*` variables.
pub async fn control_plane(
    clients: &AwsClients,
    stage: &str,
) -> Result<ControlPlane<AwsPorts>, StartError> {
    let names = Names::new(stage).map_err(|message| StartError::Stage {
        stage: stage.to_owned(),
        message,
    })?;
    let settings = settings::load(&clients.ssm, &names, |name| std::env::var(name).ok()).await?;
    Ok(ControlPlane::new(
        titus_aws::aws_ports(clients, &names),
        settings,
    ))
}

/// The stage this process serves: `TITUS_STAGE`, or the default (`local`).
pub fn stage_from_env() -> String {
    std::env::var("TITUS_STAGE").unwrap_or_else(|_| titus_aws::resources::DEFAULT_STAGE.to_owned())
}
