//! The status outbox: every status update the agent produces waits here until the status queue
//! accepted it. Updates of one task are sent one at a time, in the order they were produced;
//! updates of different tasks share batches of up to ten. A failed send is retried with backoff
//! for as long as the agent lives; nothing is dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use titus_core::messages::TaskStatusUpdate;
use titus_core::TaskId;
use tokio::sync::{oneshot, watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::ports::StatusSink;

/// SQS's limit on messages in one batch.
const MAX_BATCH: usize = 10;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Resolves once the update was accepted by the status queue.
#[derive(Debug)]
pub struct Delivery(oneshot::Receiver<()>);

impl Delivery {
    /// Whether the update was delivered; `false` only when the outbox was dropped first (the
    /// agent is going away).
    pub async fn delivered(self) -> bool {
        self.0.await.is_ok()
    }
}

#[derive(Debug)]
struct Entry {
    update: TaskStatusUpdate,
    delivered: Option<oneshot::Sender<()>>,
}

#[derive(Debug, Default)]
struct State {
    queues: HashMap<TaskId, VecDeque<Entry>>,
    /// Tasks with updates waiting and none in flight, oldest first.
    ready: VecDeque<TaskId>,
    pending: usize,
}

/// The outbox; `run` is its sender, `enqueue` its producers' side.
#[derive(Debug)]
pub struct Outbox<S> {
    sink: S,
    state: Mutex<State>,
    wake: Notify,
    pending: watch::Sender<usize>,
}

impl<S: StatusSink> Outbox<S> {
    pub fn new(sink: S) -> Outbox<S> {
        Outbox {
            sink,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            pending: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves the queues consistent (every mutation is a
        // single push or pop), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an update behind the task's earlier ones.
    pub fn enqueue(&self, update: TaskStatusUpdate) -> Delivery {
        let (tx, rx) = oneshot::channel();
        let pending = {
            let mut state = self.lock();
            let task_id = update.task_id.clone();
            let queue = state.queues.entry(task_id.clone()).or_default();
            let was_idle = queue.is_empty();
            queue.push_back(Entry {
                update,
                delivered: Some(tx),
            });
            if was_idle {
                state.ready.push_back(task_id);
            }
            state.pending += 1;
            state.pending
        };
        self.pending.send_replace(pending);
        self.wake.notify_one();
        Delivery(rx)
    }

    /// How many updates wait to be sent.
    pub fn pending(&self) -> usize {
        *self.pending.borrow()
    }

    /// Returns once every update queued so far (and since) was sent.
    pub async fn flushed(&self) {
        let mut pending = self.pending.subscribe();
        // The sender lives in `self`, so the channel cannot close while we borrow it.
        let _ = pending.wait_for(|&n| n == 0).await;
    }

    /// Sends until `stop` is cancelled. Several senders may run at once: a task's update is
    /// only ever in one of their batches.
    pub async fn run(&self, stop: CancellationToken) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let batch = self.take_batch();
            if batch.is_empty() {
                tokio::select! {
                    () = self.wake.notified() => continue,
                    () = stop.cancelled() => return,
                }
            }
            let updates: Vec<TaskStatusUpdate> = batch.iter().map(|(_, u)| u.clone()).collect();
            let result = tokio::select! {
                result = self.sink.send(&updates) => result,
                () = stop.cancelled() => {
                    self.put_back(batch.into_iter().map(|(task, _)| task).collect());
                    return;
                }
            };
            match result {
                Ok(accepted) => {
                    let all_accepted = accepted.len() == batch.len() && accepted.iter().all(|&a| a);
                    self.settle(&batch, &accepted);
                    if all_accepted {
                        backoff = FIRST_BACKOFF;
                        continue;
                    }
                    tracing::warn!(
                        rejected = accepted.iter().filter(|&&a| !a).count(),
                        "status queue rejected part of a batch; retrying"
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "sending status updates failed; retrying");
                    self.put_back(batch.into_iter().map(|(task, _)| task).collect());
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stop.cancelled() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// The head update of up to ten ready tasks; those tasks are in flight until settled.
    fn take_batch(&self) -> Vec<(TaskId, TaskStatusUpdate)> {
        let mut state = self.lock();
        let mut batch = Vec::new();
        while batch.len() < MAX_BATCH {
            let Some(task) = state.ready.pop_front() else {
                break;
            };
            if let Some(head) = state.queues.get(&task).and_then(|q| q.front()) {
                batch.push((task, head.update.clone()));
            }
        }
        if !state.ready.is_empty() {
            // More than one batch is ready: let another sender take the rest.
            self.wake.notify_one();
        }
        batch
    }

    /// Pops the accepted heads and makes their tasks ready again.
    fn settle(&self, batch: &[(TaskId, TaskStatusUpdate)], accepted: &[bool]) {
        let pending = {
            let mut state = self.lock();
            for (i, (task, _)) in batch.iter().enumerate() {
                let queue = state.queues.entry(task.clone()).or_default();
                if accepted.get(i).copied().unwrap_or(false) {
                    if let Some(mut entry) = queue.pop_front() {
                        if let Some(tx) = entry.delivered.take() {
                            let _ = tx.send(());
                        }
                    }
                    state.pending = state.pending.saturating_sub(1);
                }
                let more = state.queues.get(task).is_some_and(|q| !q.is_empty());
                if more {
                    state.ready.push_back(task.clone());
                } else {
                    state.queues.remove(task);
                }
            }
            state.pending
        };
        self.pending.send_replace(pending);
    }

    /// Returns tasks whose send failed to the front of the line, in their order.
    fn put_back(&self, tasks: Vec<TaskId>) {
        let mut state = self.lock();
        for task in tasks.into_iter().rev() {
            state.ready.push_front(task);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use titus_core::{JobId, TaskState};

    use super::*;
    use crate::testing::MemoryStatusSink;

    fn update(task: &str, state: TaskState) -> TaskStatusUpdate {
        TaskStatusUpdate {
            task_id: TaskId::from_string(task),
            job_id: JobId::from_string("job"),
            agent_id: "a".to_owned(),
            incarnation: 1,
            state,
            reason: None,
            message: String::new(),
            timestamp_ms: 1,
            exit_code: None,
            oom_killed: false,
            container_id: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_send_is_retried_and_order_per_task_is_kept() {
        let sink = MemoryStatusSink::default();
        sink.fail_next_sends(3);
        let outbox = Arc::new(Outbox::new(sink.clone()));
        let stop = CancellationToken::new();
        let sender = tokio::spawn({
            let outbox = outbox.clone();
            let stop = stop.clone();
            async move { outbox.run(stop).await }
        });

        let states = [
            TaskState::StartInitiated,
            TaskState::Started,
            TaskState::Finished,
        ];
        let mut deliveries = Vec::new();
        for state in states {
            for task in ["t1", "t2"] {
                deliveries.push(outbox.enqueue(update(task, state)));
            }
        }
        for delivery in deliveries {
            assert!(delivery.delivered().await);
        }
        outbox.flushed().await;
        stop.cancel();
        sender.await.unwrap();

        for task in ["t1", "t2"] {
            let sent: Vec<TaskState> = sink
                .sent()
                .iter()
                .filter(|u| u.task_id.as_str() == task)
                .map(|u| u.state)
                .collect();
            assert_eq!(sent, states, "task {task}");
        }
        assert_eq!(outbox.pending(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn updates_of_many_tasks_share_batches_of_ten() {
        let sink = MemoryStatusSink::default();
        let outbox = Arc::new(Outbox::new(sink.clone()));
        for i in 0..25 {
            let _ = outbox.enqueue(update(&format!("t{i}"), TaskState::Started));
        }
        let stop = CancellationToken::new();
        let sender = tokio::spawn({
            let outbox = outbox.clone();
            let stop = stop.clone();
            async move { outbox.run(stop).await }
        });

        outbox.flushed().await;
        stop.cancel();
        sender.await.unwrap();

        assert_eq!(sink.batch_sizes(), vec![10, 10, 5]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejected_entry_is_sent_again_without_reordering_its_task() {
        let sink = MemoryStatusSink::default();
        sink.reject_task_once("t1");
        let outbox = Arc::new(Outbox::new(sink.clone()));
        let _ = outbox.enqueue(update("t1", TaskState::Started));
        let _ = outbox.enqueue(update("t1", TaskState::Finished));
        let _ = outbox.enqueue(update("t2", TaskState::Started));
        let stop = CancellationToken::new();
        let sender = tokio::spawn({
            let outbox = outbox.clone();
            let stop = stop.clone();
            async move { outbox.run(stop).await }
        });

        outbox.flushed().await;
        stop.cancel();
        sender.await.unwrap();

        let t1: Vec<TaskState> = sink
            .sent()
            .iter()
            .filter(|u| u.task_id.as_str() == "t1")
            .map(|u| u.state)
            .collect();
        assert_eq!(t1, vec![TaskState::Started, TaskState::Finished]);
    }
}
