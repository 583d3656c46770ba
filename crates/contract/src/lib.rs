//! One contract suite of store and queue behaviours, written once and run against every
//! implementation of the ports: the AWS adapters on the emulator (`crates/aws/tests/contract.rs`)
//! and the in-process world (`crates/memory/tests/contract.rs`). Where they disagree, DynamoDB's
//! and SQS's semantics (the adapters') are right.
//!
//! An implementation provides a [`Harness`]: fresh, isolated ports per test (a stage of its
//! own), plus what the queue behaviours read back (an agent's own queue, the stage queues'
//! messages) and a way to let time pass for visibility timeouts. [`contract_tests!`] expands to
//! one `#[tokio::test]` per behaviour, each named after it, so the crate that runs the suite
//! needs `tokio` (with `macros` and `rt`) as a dev-dependency.
//!
//! Behaviours the emulator cannot show (index lag, metering, injected faults) are not here:
//! they are titus-memory's own tests.

// A test suite: a failed step is a failed test, with the value in its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod agents;
pub mod allocations;
pub mod events;
pub mod fixtures;
pub mod jobs;
pub mod leases;
pub mod logs;
pub mod queues;
pub mod quotas;
pub mod rate;
pub mod results;
pub mod scaler;
pub mod sinks;
pub mod tasks;

use std::future::Future;
use std::time::Duration;

use titus_core::messages::{AgentRequest, Rejection, TaskStatusUpdate};
use titus_core::ports::{AgentRequestSink, CommandSource, DeadLetter, Ports, StatusSink};

/// Makes fresh, isolated fixtures of one implementation.
pub trait Harness: Send + Sync {
    type Fixture: Fixture;

    /// Ports no other test sees.
    fn fresh(&self) -> impl Future<Output = Self::Fixture> + Send;
}

/// One test's ports, and what the queue behaviours need beside them.
pub trait Fixture: Send + Sync {
    type Ports: Ports;
    type Source: CommandSource;
    type Status: StatusSink;
    type Requests: AgentRequestSink;

    fn ports(&self) -> &Self::Ports;

    /// Agent `agent_id`'s own queue, as the agent reads it.
    fn command_source(&self, agent_id: &str) -> impl Future<Output = Self::Source> + Send;

    /// The stage's status queue, as agents send to it.
    fn status_sink(&self) -> impl Future<Output = Self::Status> + Send;

    /// The stage's agent-requests queue, as agents send to it.
    fn agent_request_sink(&self) -> impl Future<Output = Self::Requests> + Send;

    /// Removes and returns the updates on the status queue.
    fn drain_status_updates(&self) -> impl Future<Output = Vec<TaskStatusUpdate>> + Send;

    /// Removes and returns the status queue's dead letters, with their reasons.
    fn drain_dead_letters(&self) -> impl Future<Output = Vec<DeadLetter>> + Send;

    /// Removes and returns the refused submissions.
    fn drain_rejections(&self) -> impl Future<Output = Vec<Rejection>> + Send;

    /// Removes and returns the requests on the agent-requests queue.
    fn drain_agent_requests(&self) -> impl Future<Output = Vec<AgentRequest>> + Send;

    /// Removes and returns the bodies on agent `agent_id`'s dead-letter queue.
    fn drain_agent_dead_letters(&self, agent_id: &str) -> impl Future<Output = Vec<String>> + Send;

    /// Lets `duration` pass for the queues (visibility timeouts): sleeps, or moves a clock.
    fn pass_time(&self, duration: Duration) -> impl Future<Output = ()> + Send;
}

/// One `#[tokio::test]` per behaviour of the suite, over the harness `$harness` builds.
#[macro_export]
macro_rules! contract_tests {
    ($harness:expr) => {
        $crate::__behaviours!($harness;
            jobs::a_created_job_reads_back_as_written_and_awaits_its_tasks,
            jobs::a_second_create_with_the_same_idempotency_key_returns_the_first_job,
            jobs::an_idempotency_key_reused_for_another_request_is_refused,
            jobs::the_same_idempotency_key_from_another_caller_creates_another_job,
            jobs::a_job_update_with_a_stale_version_is_a_conflict_and_changes_nothing,
            jobs::listing_jobs_pages_newest_first_through_every_match_exactly_once,
            jobs::listing_jobs_filters_by_owner_application_type_state_and_attribute,
            jobs::a_filtered_walk_ends_with_its_last_match_never_an_empty_page,
            jobs::a_cursor_the_listing_did_not_issue_is_an_invalid_cursor,
            jobs::jobs_awaiting_their_tasks_are_listed_oldest_first_until_their_tasks_are_written,
            jobs::initial_tasks_are_refused_once_the_job_changed_and_none_are_written,
            jobs::initial_tasks_are_written_all_or_none_with_the_cancellation_reasons,
            quotas::creates_are_charged_and_one_past_a_limit_is_refused_whole,
            quotas::a_repeated_idempotent_create_is_charged_once,
            quotas::growing_past_a_limit_is_refused_and_finishing_releases_everything,
            quotas::two_creates_racing_for_the_last_of_a_quota_cannot_both_win,
            tasks::inserting_a_task_whose_id_exists_is_a_conflict,
            tasks::a_task_update_with_a_stale_version_is_a_conflict_and_changes_nothing,
            tasks::a_job_s_tasks_are_listed_oldest_first_page_by_page,
            tasks::pending_tasks_come_oldest_first_and_only_once_eligible,
            tasks::unacknowledged_tasks_are_the_launched_ones_dispatched_before_the_bound,
            tasks::tasks_are_listed_by_agent_only_while_they_hold_resources_there,
            tasks::transitional_tasks_are_listed_oldest_first_by_when_they_entered_their_state,
            tasks::a_job_s_active_tasks_leave_out_its_finished_ones,
            leases::a_free_lease_is_taken_at_epoch_1_and_renewed_by_its_owner_at_the_same_epoch,
            leases::a_held_lease_is_refused_to_others_until_it_expires_then_taken_at_a_new_epoch,
            leases::a_released_lease_is_taken_at_once_and_a_stale_release_changes_nothing,
            allocations::a_commit_adds_each_task_s_resources_and_count_to_its_agent,
            allocations::a_commit_that_would_overcommit_an_agent_is_refused_whole,
            allocations::a_fenced_commit_is_refused_after_the_lease_is_lost_and_changes_nothing,
            allocations::a_commit_for_another_incarnation_of_the_agent_is_refused,
            allocations::a_task_committed_twice_is_placed_once,
            allocations::a_draining_agent_takes_no_placements,
            allocations::a_commit_with_two_actions_on_one_task_is_refused_and_changes_nothing,
            allocations::a_transaction_of_more_than_100_items_is_refused_and_changes_nothing,
            allocations::finishing_a_task_releases_its_resources_exactly_once,
            allocations::finishing_a_task_of_a_deregistered_agent_still_finishes_it,
            agents::a_new_agent_registers_active_at_incarnation_1_holding_nothing,
            agents::a_restarted_agent_keeps_its_incarnation_allocation_and_draining_state,
            agents::a_lost_agent_without_tasks_re_registers_as_its_next_incarnation,
            agents::a_lost_agent_with_tasks_cannot_re_register,
            agents::agent_state_changes_and_heartbeats_are_conditional,
            agents::a_heartbeat_report_is_stored_and_returns_the_agent_s_record,
            agents::agents_are_listed_in_id_order_and_a_deregistered_one_is_gone,
            queues::sending_to_an_agent_without_a_queue_is_no_such_queue,
            queues::commands_sent_in_more_than_one_batch_all_reach_the_agent,
            queues::a_received_message_is_hidden_until_its_visibility_ends_then_comes_back_counted,
            queues::extending_a_message_hides_it_for_the_new_time_from_now,
            queues::a_released_message_is_delivered_again_at_once,
            queues::a_deleted_message_is_gone_and_a_receipt_no_receive_issued_is_refused,
            queues::a_message_received_more_than_the_limit_goes_to_the_dead_letter_queue,
            sinks::status_updates_reach_the_status_queue_each_accepted,
            sinks::a_dead_letter_keeps_its_body_reason_and_source_message_id,
            sinks::a_rejection_is_kept_with_its_reason_and_errors,
            sinks::agent_requests_reach_the_agent_requests_queue,
            scaler::scaler_state_saved_under_its_lease_loads_back,
            scaler::scaler_state_is_refused_to_a_run_that_lost_its_lease,
            results::a_placement_result_reads_back_and_the_next_write_replaces_it,
            results::cleared_results_are_gone_and_a_job_cleared_and_written_at_once_keeps_it,
            results::a_full_write_of_results_and_removals_lands_whole,
            results::a_write_past_the_limit_is_refused_and_writes_nothing,
            events::events_read_back_in_feed_order_from_both_their_partitions,
            events::an_event_written_twice_is_kept_once,
            events::a_full_write_of_events_lands_whole_and_a_larger_one_is_refused,
        );
    };
}

/// The expansion of [`contract_tests!`]: one test per `module::behaviour`.
#[doc(hidden)]
#[macro_export]
macro_rules! __behaviours {
    ($harness:expr; $($module:ident :: $behaviour:ident),* $(,)?) => {
        $(
            #[::tokio::test]
            async fn $behaviour() {
                let harness = $harness;
                $crate::$module::$behaviour(&harness).await;
            }
        )*
    };
}
