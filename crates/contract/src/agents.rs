//! Agents' records: registration (new, restart, a lost agent's next incarnation), conditional
//! state changes and heartbeats, the agent's own reports, listing and deregistration.

use titus_core::{
    AgentHeartbeat, AgentState, AgentStore, Ports, Resources, StoreError, TaskId, TaskReason,
    TaskState,
};

use titus_core::ports::{AllocationStore, TaskLogs};

use crate::fixtures::{agent, capacity, placed, registered, stored_agent, stored_batch, NOW_MS};
use crate::{Fixture, Harness};

pub async fn a_new_agent_registers_active_at_incarnation_1_holding_nothing<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let agents = fx.ports().agents();
    // What the control plane decides is not the registration's to set.
    let mut asked = agent("a1", 8_192, NOW_MS);
    asked.state = AgentState::Draining;
    asked.incarnation = 7;
    asked.task_count = 3;
    asked.allocated = capacity(512);
    asked.task_logs = Some(TaskLogs {
        group: "/titus/t/tasks".to_owned(),
        region: Some("eu-west-1".to_owned()),
    });

    let registered = agents.register_agent(&asked).await.unwrap();

    assert_eq!(registered.state, AgentState::Active);
    assert_eq!(registered.incarnation, 1);
    assert_eq!(registered.allocated, Resources::ZERO);
    assert_eq!(registered.task_count, 0);
    assert_eq!(registered.capacity, asked.capacity);
    assert_eq!(registered.registration_id, asked.registration_id);
    assert_eq!(registered.heartbeat_at_ms, NOW_MS);
    assert_eq!(
        registered.task_logs, asked.task_logs,
        "where its tasks' output goes is the agent's to say"
    );
    assert_eq!(agents.get_agent("a1").await.unwrap(), Some(registered));
}

pub async fn a_restarted_agent_keeps_its_incarnation_allocation_and_draining_state<H: Harness>(
    h: &H,
) {
    let fx = h.fresh().await;
    let agents = fx.ports().agents();
    let (_, tasks) = stored_batch(&fx, 1, NOW_MS).await;
    let first = registered(&fx, "a1", 8_192).await;
    let write = placed(&fx, &tasks[0], &first).await;
    agents
        .set_agent_state("a1", AgentState::Active, AgentState::Draining)
        .await
        .unwrap();
    let mut restarted = agent("a1", 16_384, NOW_MS + 5_000);
    restarted.registration_id = "after-restart".to_owned();
    assert_eq!(first.task_logs, None);
    restarted.task_logs = Some(TaskLogs {
        group: "/titus/t/tasks".to_owned(),
        region: None,
    });

    let again = agents.register_agent(&restarted).await.unwrap();

    assert_eq!(again.allocated, write.resources);
    assert_eq!(again.task_count, 1);
    assert_eq!(again.state, AgentState::Draining);
    assert_eq!(again.incarnation, first.incarnation);
    assert_eq!(
        again.capacity.memory_mb, 16_384,
        "capacity is the agent's to report"
    );
    assert_eq!(
        again.registered_at_ms, NOW_MS,
        "the first registration's time is kept"
    );
    assert_eq!(again.heartbeat_at_ms, NOW_MS + 5_000);
    assert_eq!(again.registration_id, "after-restart");
    assert_eq!(
        again.task_logs, restarted.task_logs,
        "a restart may change where the output goes"
    );
    assert_eq!(agents.get_agent("a1").await.unwrap(), Some(again));
}

pub async fn a_lost_agent_without_tasks_re_registers_as_its_next_incarnation<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let agents = fx.ports().agents();
    registered(&fx, "a1", 8_192).await;
    agents
        .set_agent_state("a1", AgentState::Active, AgentState::Lost)
        .await
        .unwrap();

    let back = agents
        .register_agent(&agent("a1", 8_192, NOW_MS + 9_000))
        .await
        .unwrap();
    let restarted = agents
        .register_agent(&agent("a1", 8_192, NOW_MS + 10_000))
        .await
        .unwrap();

    assert_eq!((back.state, back.incarnation), (AgentState::Active, 2));
    assert_eq!(
        restarted.incarnation, 2,
        "a restart of the new life keeps it"
    );
}

pub async fn a_lost_agent_with_tasks_cannot_re_register<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let agents = fx.ports().agents();
    let (_, tasks) = stored_batch(&fx, 1, NOW_MS).await;
    let first = registered(&fx, "a1", 8_192).await;
    let write = placed(&fx, &tasks[0], &first).await;
    agents
        .set_agent_state("a1", AgentState::Active, AgentState::Lost)
        .await
        .unwrap();

    let refused = agents
        .register_agent(&agent("a1", 8_192, NOW_MS + 9_000))
        .await;
    let fenced = stored_agent(&fx, "a1").await;
    // The control plane finishes the old life's task; then the agent may come back.
    let mut lost = write.task.clone();
    lost.transition(
        TaskState::Finished,
        Some(TaskReason::Lost),
        "agent lost",
        NOW_MS + 9_500,
    )
    .unwrap();
    fx.ports()
        .allocations()
        .finish_and_release(&lost, write.task.version, "a1", write.resources)
        .await
        .unwrap();
    let back = agents
        .register_agent(&agent("a1", 8_192, NOW_MS + 10_000))
        .await
        .unwrap();

    assert!(
        matches!(&refused, Err(StoreError::Conflict { entity: "agent", id, .. }) if id == "a1"),
        "{refused:?}"
    );
    assert_eq!((fenced.state, fenced.incarnation), (AgentState::Lost, 1));
    assert_eq!((back.state, back.incarnation), (AgentState::Active, 2));
}

pub async fn agent_state_changes_and_heartbeats_are_conditional<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let agents = fx.ports().agents();
    registered(&fx, "a1", 8_192).await;

    let wrong_from = agents
        .set_agent_state("a1", AgentState::Draining, AgentState::Lost)
        .await;
    let unknown_state = agents
        .set_agent_state("nobody", AgentState::Active, AgentState::Draining)
        .await;
    let unknown_heartbeat = agents.heartbeat("nobody", NOW_MS + 2_000).await;
    agents.heartbeat("a1", NOW_MS + 3_000).await.unwrap();
    agents
        .set_agent_state("a1", AgentState::Active, AgentState::Draining)
        .await
        .unwrap();

    for result in [wrong_from, unknown_state, unknown_heartbeat] {
        assert!(
            matches!(
                result,
                Err(StoreError::Conflict {
                    entity: "agent",
                    ..
                })
            ),
            "{result:?}"
        );
    }
    let stored = stored_agent(&fx, "a1").await;
    assert_eq!(stored.state, AgentState::Draining);
    assert_eq!(stored.heartbeat_at_ms, NOW_MS + 3_000);
    assert_eq!(agents.get_agent("nobody").await.unwrap(), None);
}

pub async fn a_heartbeat_report_is_stored_and_returns_the_agent_s_record<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let agents = fx.ports().agents();
    registered(&fx, "a1", 8_192).await;
    registered(&fx, "quiet", 8_192).await;
    let report = AgentHeartbeat {
        at_ms: NOW_MS + 7_000,
        running_task_ids: vec![TaskId::from_string("t1"), TaskId::from_string("t2")],
        used: Resources {
            cpu_millis: 1_500,
            memory_mb: 1_024,
            disk_mb: 20_000,
            network_mbps: 256,
            gpu: 0,
        },
    };

    let active = agents.report_heartbeat("a1", &report).await.unwrap();
    agents
        .set_agent_state("a1", AgentState::Active, AgentState::Draining)
        .await
        .unwrap();
    let draining = agents.report_heartbeat("a1", &report).await.unwrap();
    let unknown = agents.report_heartbeat("nobody", &report).await;

    assert_eq!(active.state, AgentState::Active);
    assert_eq!(active.heartbeat_at_ms, NOW_MS + 7_000);
    assert_eq!(
        draining.state,
        AgentState::Draining,
        "the agent learns it is draining"
    );
    assert!(
        matches!(
            unknown,
            Err(StoreError::Conflict {
                entity: "agent",
                ..
            })
        ),
        "{unknown:?}"
    );
    assert_eq!(
        agents.last_report("a1").await.unwrap(),
        Some(report.clone())
    );
    assert_eq!(agents.last_report("quiet").await.unwrap(), None);
    assert_eq!(agents.last_report("nobody").await.unwrap(), None);
    assert_eq!(
        agents.list_reports().await.unwrap(),
        vec![("a1".to_owned(), report)]
    );
    let stored = stored_agent(&fx, "a1").await;
    assert_eq!(stored.heartbeat_at_ms, NOW_MS + 7_000);
    assert_eq!(
        stored.task_count, 0,
        "the task count is the control plane's"
    );
}

pub async fn agents_are_listed_in_id_order_and_a_deregistered_one_is_gone<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let agents = fx.ports().agents();
    for id in ["c", "a", "b"] {
        registered(&fx, id, 8_192).await;
    }

    agents.deregister_agent("b").await.unwrap();
    let unknown = agents.deregister_agent("never-registered").await;

    let ids: Vec<String> = agents
        .list_agents()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(ids, vec!["a", "c"]);
    assert_eq!(agents.get_agent("b").await.unwrap(), None);
    assert_eq!(unknown, Ok(()), "deregistering what is gone is done");
}
