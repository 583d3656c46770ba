//! The world's ports, one view each, and [`MemoryPorts`], the bundle the use cases take, built
//! the way `titus_aws::aws_ports` builds the AWS one.

use titus_core::ports::PortSet;

use crate::agents::MemoryAgentStore;
use crate::clock::ManualClock;
use crate::fleet::MemoryFleet;
use crate::jobs::MemoryJobStore;
use crate::lease::{MemoryAllocationStore, MemoryLeaseStore};
use crate::scaler_state::MemoryScalerState;
use crate::sinks::{
    MemoryAgentRequests, MemoryCommandQueue, MemoryCommandSource, MemoryDeadLetters,
    MemoryEventBus, MemoryRejections, MemoryStatusSink,
};
use crate::world::MemoryWorld;

/// A world's ports; the clock is the world's. A test may swap one port with `PortSet::with_*`.
pub type MemoryPorts = PortSet<
    MemoryJobStore,
    MemoryAgentStore,
    MemoryLeaseStore,
    MemoryAllocationStore,
    MemoryCommandQueue,
    MemoryDeadLetters,
    MemoryRejections,
    MemoryFleet,
    MemoryScalerState,
    ManualClock,
>;

impl MemoryWorld {
    /// Every port of the control plane over this world.
    pub fn ports(&self) -> MemoryPorts {
        PortSet {
            jobs: self.jobs(),
            agents: self.agents(),
            leases: self.leases(),
            allocations: self.allocations(),
            commands: self.commands(),
            dead_letters: self.dead_letters(),
            rejections: self.rejections(),
            fleet: self.fleet(),
            scaler_state: self.scaler_state(),
            clock: self.clock().clone(),
        }
    }

    pub fn jobs(&self) -> MemoryJobStore {
        MemoryJobStore::new(self.clone())
    }

    pub fn agents(&self) -> MemoryAgentStore {
        MemoryAgentStore::new(self.clone())
    }

    pub fn leases(&self) -> MemoryLeaseStore {
        MemoryLeaseStore::new(self.clone())
    }

    pub fn allocations(&self) -> MemoryAllocationStore {
        MemoryAllocationStore::new(self.clone())
    }

    /// Agents' command queues, from the control plane.
    pub fn commands(&self) -> MemoryCommandQueue {
        MemoryCommandQueue::new(self.clone())
    }

    /// Agent `agent_id`'s own queue, as the agent reads it (looked up on each call, so it may be
    /// created after this).
    pub fn command_source(&self, agent_id: &str) -> MemoryCommandSource {
        let queue = self.lock().queues.agent_queue(agent_id);
        MemoryCommandSource::new(self.clone(), queue)
    }

    /// Any queue of the world, read as an agent reads its own (the status queue, say).
    pub fn queue_source(&self, queue: &str) -> MemoryCommandSource {
        MemoryCommandSource::new(self.clone(), queue.to_owned())
    }

    /// The status queue, from the agents.
    pub fn status_sink(&self) -> MemoryStatusSink {
        MemoryStatusSink::new(self.clone())
    }

    /// The agent-requests queue, from the agents.
    pub fn agent_requests(&self) -> MemoryAgentRequests {
        MemoryAgentRequests::new(self.clone())
    }

    /// The status queue's dead-letter queue.
    pub fn dead_letters(&self) -> MemoryDeadLetters {
        MemoryDeadLetters::new(self.clone())
    }

    /// The rejected-submissions queue.
    pub fn rejections(&self) -> MemoryRejections {
        MemoryRejections::new(self.clone())
    }

    pub fn fleet(&self) -> MemoryFleet {
        MemoryFleet::new(self.clone())
    }

    /// The stage's event bus.
    pub fn event_bus(&self) -> MemoryEventBus {
        MemoryEventBus::new(self.clone())
    }

    pub fn scaler_state(&self) -> MemoryScalerState {
        MemoryScalerState::new(self.clone())
    }
}
