//! `titus-provision --teardown` against the emulator: it removes only its own stage's
//! scaler-launched instances and agent queues, a dry run changes nothing, and a second run finds
//! nothing left. Each test names stages of its own, so tests run in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Command;

use aws_sdk_ec2::types::{Filter, InstanceType, ResourceType, Tag, TagSpecification};
use titus_aws::resources::tag;
use titus_aws::teardown;
use titus_aws::{AwsClients, Names};

async fn clients() -> AwsClients {
    AwsClients::local_emulator().await
}

/// A stage name no other test uses: `t` and six hex digits, so that `{it}x` and `{it}-agent-z`
/// are valid stages too.
fn unique_stage() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..6])
}

async fn image(clients: &AwsClients) -> String {
    titus_aws::ec2::first_amazon_image(&clients.ec2)
        .await
        .unwrap()
        .expect("the emulator offers an AMI")
}

/// Launches one instance with these tags, as the scaler (or someone else) would.
async fn launch(clients: &AwsClients, image: &str, tags: &[(&str, &str)]) -> String {
    let mut spec = TagSpecification::builder().resource_type(ResourceType::Instance);
    for (key, value) in tags {
        spec = spec.tags(Tag::builder().key(*key).value(*value).build());
    }
    let out = clients
        .ec2
        .run_instances()
        .image_id(image)
        .instance_type(InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .tag_specifications(spec.build())
        .send()
        .await
        .unwrap();
    out.instances()[0].instance_id().unwrap().to_owned()
}

async fn launch_by_scaler(clients: &AwsClients, image: &str, stage: &str) -> String {
    launch(
        clients,
        image,
        &[
            (tag::STAGE, stage),
            (tag::POOL, "default"),
            (tag::MANAGED_BY, tag::SCALER),
        ],
    )
    .await
}

async fn create_queue(clients: &AwsClients, name: &str) {
    clients
        .sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap();
}

/// An agent's queue and its DLQ, named as the control plane names them.
async fn create_agent_queues(clients: &AwsClients, names: &Names, agent_id: &str) -> Vec<String> {
    let def = names.agent_queue_def(agent_id);
    let dlq = def.dead_letter.unwrap().name;
    create_queue(clients, &def.name).await;
    create_queue(clients, &dlq).await;
    vec![def.name, dlq]
}

async fn queue_exists(clients: &AwsClients, name: &str) -> bool {
    clients
        .sqs
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .is_ok()
}

async fn states(clients: &AwsClients, ids: &[String]) -> BTreeMap<String, String> {
    let out = clients
        .ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name("instance-id")
                .set_values(Some(ids.to_vec()))
                .build(),
        )
        .send()
        .await
        .unwrap();
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| {
            (
                i.instance_id().unwrap().to_owned(),
                i.state().unwrap().name().unwrap().as_str().to_owned(),
            )
        })
        .collect()
}

/// Runs `titus-provision` with these arguments against the emulator; returns its stdout,
/// failing the test unless it exited 0.
fn provision_command(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_titus-provision"))
        .args(args)
        .output()
        .expect("titus-provision runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "titus-provision {args:?} exited {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn teardown_removes_only_its_own_stage_s_instances_and_agent_queues() {
    let clients = clients().await;
    let image = image(&clients).await;
    let s1 = unique_stage();
    let s1x = format!("{s1}x");
    // A stage whose name makes its queues share s1's agent-queue prefix.
    let lookalike = format!("{s1}-agent-z");
    let (n1, n1x, nlook) = (
        Names::new(&s1).unwrap(),
        Names::new(&s1x).unwrap(),
        Names::new(&lookalike).unwrap(),
    );

    let s1_scaled = vec![
        launch_by_scaler(&clients, &image, &s1).await,
        launch_by_scaler(&clients, &image, &s1).await,
    ];
    let s1x_scaled = launch_by_scaler(&clients, &image, &s1x).await;
    let lookalike_scaled = launch_by_scaler(&clients, &image, &lookalike).await;
    // An instance of the stage that the scaler did not launch.
    let s1_unmanaged = launch(&clients, &image, &[(tag::STAGE, &s1)]).await;
    let mut s1_queues = Vec::new();
    for id in &s1_scaled {
        s1_queues.extend(create_agent_queues(&clients, &n1, id).await);
    }
    // A local agent's id carries `-agent-` too.
    s1_queues.extend(create_agent_queues(&clients, &n1, &format!("{s1}-agent-1")).await);
    let mut kept_queues = create_agent_queues(&clients, &n1x, &s1x_scaled).await;
    kept_queues.extend(create_agent_queues(&clients, &nlook, &lookalike_scaled).await);
    for fixed in [
        n1.submit_queue(),
        n1x.submit_queue(),
        nlook.submit_queue(),
        nlook.status_queue(),
    ] {
        create_queue(&clients, &fixed).await;
        kept_queues.push(fixed);
    }
    let kept_instances = vec![
        s1x_scaled.clone(),
        lookalike_scaled.clone(),
        s1_unmanaged.clone(),
    ];
    let all_instances: Vec<String> = s1_scaled.iter().chain(&kept_instances).cloned().collect();

    // A dry run lists s1's and changes nothing.
    let dry = provision_command(&["--teardown", "--stage", &s1, "--dry-run"]);
    for id in &s1_scaled {
        assert!(
            dry.contains(&format!("would terminate instance {id} (running)")),
            "{dry}"
        );
    }
    for name in &s1_queues {
        assert!(
            dry.contains(&format!("would delete    queue {name}\n")),
            "{dry}"
        );
    }
    for other in kept_instances.iter().chain(&kept_queues) {
        assert!(!dry.contains(other.as_str()), "{other} is not s1's:\n{dry}");
    }
    assert!(dry.contains("nothing was changed"), "{dry}");
    assert!(
        states(&clients, &all_instances)
            .await
            .values()
            .all(|s| s == "running"),
        "a dry run terminates nothing"
    );
    for name in s1_queues.iter().chain(&kept_queues) {
        assert!(queue_exists(&clients, name).await, "a dry run keeps {name}");
    }

    // The teardown removes exactly s1's.
    let out = provision_command(&["--teardown", "--stage", &s1, "--wait-secs", "30"]);
    let after = states(&clients, &all_instances).await;
    for id in &s1_scaled {
        assert!(out.contains(&format!("terminated instance {id}")), "{out}");
        assert!(
            matches!(after[id].as_str(), "shutting-down" | "terminated"),
            "{id} is {}",
            after[id]
        );
    }
    for id in &kept_instances {
        assert_eq!(after[id], "running", "{id} is not s1's scaler's");
    }
    for name in &s1_queues {
        assert!(out.contains(&format!("deleted    queue {name}\n")), "{out}");
        assert!(!queue_exists(&clients, name).await, "{name} is deleted");
    }
    for name in &kept_queues {
        assert!(
            queue_exists(&clients, name).await,
            "{name} is not s1's agents'"
        );
    }
    assert!(
        out.contains("2 instances terminated, 6 agent queues deleted"),
        "{out}"
    );

    // Again: nothing is left, and it says so.
    let again = provision_command(&["--teardown", "--stage", &s1]);
    assert!(again.contains("nothing left to remove"), "{again}");
    assert!(!again.contains("terminated instance"), "{again}");
    let dry_again = provision_command(&["--teardown", "--stage", &s1, "--dry-run"]);
    assert!(dry_again.contains("nothing left to remove"), "{dry_again}");
}

#[tokio::test]
async fn agent_queues_are_found_across_list_queues_pages() {
    let clients = clients().await;
    let names = Names::new(&unique_stage()).unwrap();
    let mut expected = Vec::new();
    for n in 0..3 {
        expected.extend(create_agent_queues(&clients, &names, &format!("i-{n:017x}")).await);
    }
    expected.sort();

    let found = teardown::agent_queues(&clients.sqs, &names, 2)
        .await
        .unwrap();

    let found: Vec<String> = found.into_iter().map(|q| q.name).collect();
    assert_eq!(found, expected);
}
