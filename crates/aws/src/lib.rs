//! AWS adapters for Titus: the resource definitions, the DynamoDB job store, and provisioning.
//!
//! Everything here goes through aws-sdk-rust, so the same code talks to AWS or to the local
//! emulator named by `AWS_ENDPOINT_URL`.

pub mod agents;
pub mod clients;
pub mod config;
pub mod dynamo;
pub mod lease;
pub mod parameters;
pub mod provision;
pub mod resources;
pub mod sqs;

pub use agents::DynamoAgentStore;
pub use clients::AwsClients;
pub use dynamo::DynamoJobStore;
pub use lease::{DynamoAllocationStore, DynamoLeaseStore};
pub use resources::{Definitions, Names};
pub use sqs::SqsCommandQueue;
