//! The AWS adapters: every port of `titus_core::ports` on DynamoDB, SQS and EC2, the one SSM
//! settings loader, the stage's resource definitions, their provisioning and the teardown of what
//! a stage made at run time, and [`AwsPorts`], the composition root.
//!
//! Everything here goes through aws-sdk-rust, so the same code talks to AWS or to the local
//! emulator named by `AWS_ENDPOINT_URL`.

pub mod agents;
pub mod clients;
pub mod dynamo;
pub mod ec2;
pub mod events;
pub mod lease;
pub mod logs;
pub mod ports;
pub mod provision;
pub mod rate;
pub mod resources;
pub mod scaler_state;
pub mod sqs;
pub mod ssm;
pub mod teardown;

pub use agents::DynamoAgentStore;
pub use clients::AwsClients;
pub use dynamo::DynamoJobStore;
pub use ec2::Ec2Fleet;
pub use lease::{DynamoAllocationStore, DynamoLeaseStore};
pub use logs::CloudWatchTaskLogs;
pub use ports::{aws_ports, AwsPorts};
pub use rate::DynamoRateLimiter;
pub use resources::{Definitions, Names};
pub use scaler_state::DynamoScalerState;
pub use sqs::{
    SqsAgentRequests, SqsCommandQueue, SqsCommandSource, SqsDeadLetterQueue, SqsRejectionQueue,
    SqsStatusSink,
};
