//! The composition root on AWS: every port of a stage wired to its DynamoDB table, SQS queue or
//! EC2, in one value that every Lambda main, the local stack and the emulator tests build the
//! same way ([`aws_ports`]).

use titus_core::ports::{FnClock, PortSet};

use crate::clients::AwsClients;
use crate::ec2::Ec2Fleet;
use crate::resources::Names;
use crate::scaler_state::DynamoScalerState;
use crate::sqs::{SqsCommandQueue, SqsDeadLetterQueue, SqsRejectionQueue};
use crate::{DynamoAgentStore, DynamoAllocationStore, DynamoJobStore, DynamoLeaseStore};

/// A stage's ports on AWS. The clock is the system's; a test may put another in.
pub type AwsPorts = PortSet<
    DynamoJobStore,
    DynamoAgentStore,
    DynamoLeaseStore,
    DynamoAllocationStore,
    SqsCommandQueue,
    SqsDeadLetterQueue,
    SqsRejectionQueue,
    Ec2Fleet,
    DynamoScalerState,
    FnClock,
>;

/// The ports of stage `names` over `clients`. Makes no call: queue URLs are looked up on first
/// use.
pub fn aws_ports(clients: &AwsClients, names: &Names) -> AwsPorts {
    PortSet {
        jobs: DynamoJobStore::new(clients.dynamodb.clone(), names),
        agents: DynamoAgentStore::new(clients.dynamodb.clone(), names),
        leases: DynamoLeaseStore::new(clients.dynamodb.clone(), names),
        allocations: DynamoAllocationStore::new(clients.dynamodb.clone(), names),
        commands: SqsCommandQueue::for_stage(clients.sqs.clone(), names),
        dead_letters: SqsDeadLetterQueue::for_stage(clients.sqs.clone(), names),
        rejections: SqsRejectionQueue::for_stage(clients.sqs.clone(), names),
        fleet: Ec2Fleet::new(clients.ec2.clone()),
        scaler_state: DynamoScalerState::new(clients.dynamodb.clone(), names),
        clock: FnClock::default(),
    }
}
