//! Creates a stage's tables, queues and parameters from their definitions. Idempotent: what exists
//! is checked against its definition and left alone (parameters keep an operator's value).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_sqs::types::QueueAttributeName;
use aws_sdk_ssm::types::ParameterType;

use crate::clients::AwsClients;
use crate::resources::{Definitions, KeySchema, ParameterDef, QueueDef, TableDef};

/// Why provisioning failed. Each variant names the resource and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    #[error("table {table} exists with a different schema ({detail}); expected {expected}. Delete it or use another stage")]
    TableDrift {
        table: String,
        detail: String,
        expected: String,
    },
    #[error("{operation} on {resource} failed: {message}")]
    Aws {
        operation: &'static str,
        resource: String,
        message: String,
    },
    #[error("table {table} did not become ACTIVE within {waited_secs} s")]
    NotActive { table: String, waited_secs: u64 },
}

/// What provisioning found or made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProvisionReport {
    pub created: Vec<String>,
    pub existing: Vec<String>,
    /// Queue name to URL, for every queue of the stage.
    pub queue_urls: BTreeMap<String, String>,
}

impl ProvisionReport {
    fn record(&mut self, created: bool, what: String) {
        if created {
            self.created.push(what);
        } else {
            self.existing.push(what);
        }
    }
}

fn aws_error(
    operation: &'static str,
    resource: &str,
    err: impl std::error::Error + 'static,
) -> ProvisionError {
    ProvisionError::Aws {
        operation,
        resource: resource.to_owned(),
        message: aws_sdk_dynamodb::error::DisplayErrorContext(err).to_string(),
    }
}

/// Creates or checks everything in `definitions`.
pub async fn provision(
    clients: &AwsClients,
    definitions: &Definitions,
) -> Result<ProvisionReport, ProvisionError> {
    let mut report = ProvisionReport::default();
    for table in &definitions.tables {
        let created = ensure_table(&clients.dynamodb, table).await?;
        report.record(created, format!("table {}", table.name));
    }
    for queue in &definitions.queues {
        let (url, created) = ensure_queue(&clients.sqs, queue).await?;
        report.record(created, format!("queue {}", queue.name));
        report.queue_urls.insert(queue.name.clone(), url);
    }
    for parameter in &definitions.parameters {
        let created = ensure_parameter(&clients.ssm, parameter).await?;
        report.record(created, format!("parameter {}", parameter.name));
    }
    Ok(report)
}

fn key_elements(key: &KeySchema) -> Vec<KeySchemaElement> {
    let element = |name: &str, key_type| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(key_type)
            .build()
            .expect("attribute name and key type are set")
    };
    let mut elements = vec![element(key.partition_key, KeyType::Hash)];
    if let Some(sort) = key.sort_key {
        elements.push(element(sort, KeyType::Range));
    }
    elements
}

fn describe_key(elements: &[KeySchemaElement]) -> String {
    elements
        .iter()
        .map(|e| format!("{}:{}", e.attribute_name(), e.key_type().as_str()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Creates the table if it is missing, else checks its keys and indexes. Returns whether it created.
pub async fn ensure_table(
    client: &aws_sdk_dynamodb::Client,
    table: &TableDef,
) -> Result<bool, ProvisionError> {
    let described = client.describe_table().table_name(&table.name).send().await;
    let created = match described {
        Ok(out) => {
            check_table(table, out.table())?;
            let streaming = out
                .table()
                .and_then(|t| t.stream_specification())
                .is_some_and(|spec| spec.stream_enabled());
            if table.stream && !streaming {
                // A table provisioned before it had a stream: turn it on.
                wait_active(client, &table.name).await?;
                client
                    .update_table()
                    .table_name(&table.name)
                    .stream_specification(stream_specification())
                    .send()
                    .await
                    .map_err(|e| aws_error("UpdateTable", &table.name, e))?;
            }
            false
        }
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            create_table(client, table).await?;
            true
        }
        Err(err) => return Err(aws_error("DescribeTable", &table.name, err)),
    };
    wait_active(client, &table.name).await?;
    if let Some(ttl_attribute) = table.ttl_attribute {
        ensure_ttl(client, &table.name, ttl_attribute).await?;
    }
    Ok(created)
}

fn check_table(
    table: &TableDef,
    actual: Option<&aws_sdk_dynamodb::types::TableDescription>,
) -> Result<(), ProvisionError> {
    let actual_key = actual
        .map(|t| describe_key(t.key_schema()))
        .unwrap_or_default();
    let expected_key = describe_key(&key_elements(&table.key));
    let actual_indexes: BTreeSet<String> = actual
        .map(|t| {
            t.global_secondary_indexes()
                .iter()
                .map(|i| {
                    format!(
                        "{}({})",
                        i.index_name().unwrap_or_default(),
                        describe_key(i.key_schema())
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let expected_indexes: BTreeSet<String> = table
        .global_secondary_indexes
        .iter()
        .map(|i| format!("{}({})", i.name, describe_key(&key_elements(&i.key))))
        .collect();
    if actual_key != expected_key || actual_indexes != expected_indexes {
        return Err(ProvisionError::TableDrift {
            table: table.name.clone(),
            detail: format!("key {actual_key}, indexes {actual_indexes:?}"),
            expected: format!("key {expected_key}, indexes {expected_indexes:?}"),
        });
    }
    Ok(())
}

async fn create_table(
    client: &aws_sdk_dynamodb::Client,
    table: &TableDef,
) -> Result<(), ProvisionError> {
    let mut attributes = BTreeSet::new();
    attributes.insert(table.key.partition_key);
    attributes.extend(table.key.sort_key);
    for index in &table.global_secondary_indexes {
        attributes.insert(index.key.partition_key);
        attributes.extend(index.key.sort_key);
    }
    let definitions = attributes
        .into_iter()
        .map(|name| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("name and type are set")
        })
        .collect();
    let indexes: Vec<GlobalSecondaryIndex> = table
        .global_secondary_indexes
        .iter()
        .map(|index| {
            GlobalSecondaryIndex::builder()
                .index_name(index.name)
                .set_key_schema(Some(key_elements(&index.key)))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .expect("name, key and projection are set")
        })
        .collect();
    let result = client
        .create_table()
        .table_name(&table.name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_attribute_definitions(Some(definitions))
        .set_key_schema(Some(key_elements(&table.key)))
        .set_global_secondary_indexes((!indexes.is_empty()).then_some(indexes))
        .set_stream_specification(table.stream.then(stream_specification))
        .send()
        .await;
    match result {
        Ok(_) => Ok(()),
        // Another provisioner created it between our describe and create.
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) =>
        {
            Ok(())
        }
        Err(err) => Err(aws_error("CreateTable", &table.name, err)),
    }
}

/// New and old images: the events function compares a record before and after each write.
fn stream_specification() -> aws_sdk_dynamodb::types::StreamSpecification {
    aws_sdk_dynamodb::types::StreamSpecification::builder()
        .stream_enabled(true)
        .stream_view_type(aws_sdk_dynamodb::types::StreamViewType::NewAndOldImages)
        .build()
        .expect("stream_enabled is set")
}

async fn wait_active(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<(), ProvisionError> {
    const WAIT_SECS: u64 = 60;
    for _ in 0..(WAIT_SECS * 4) {
        let out = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| aws_error("DescribeTable", table, e))?;
        if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(ProvisionError::NotActive {
        table: table.to_owned(),
        waited_secs: WAIT_SECS,
    })
}

async fn ensure_ttl(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    attribute: &str,
) -> Result<(), ProvisionError> {
    let current = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| aws_error("DescribeTimeToLive", table, e))?;
    let enabled = current.time_to_live_description().is_some_and(|d| {
        matches!(
            d.time_to_live_status(),
            Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
        ) && d.attribute_name() == Some(attribute)
    });
    if !enabled {
        client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(attribute)
                    .build()
                    .expect("enabled and attribute are set"),
            )
            .send()
            .await
            .map_err(|e| aws_error("UpdateTimeToLive", table, e))?;
    }
    Ok(())
}

/// Creates the queue (and its dead-letter queue first) or brings an existing one's attributes to
/// the definition. Returns the queue URL and whether it was created.
pub async fn ensure_queue(
    client: &aws_sdk_sqs::Client,
    queue: &QueueDef,
) -> Result<(String, bool), ProvisionError> {
    let mut attributes = vec![
        (
            QueueAttributeName::VisibilityTimeout,
            queue.visibility_timeout_secs.to_string(),
        ),
        (
            QueueAttributeName::MessageRetentionPeriod,
            queue.message_retention_secs.to_string(),
        ),
    ];
    if let Some(dead_letter) = &queue.dead_letter {
        let dlq = QueueDef {
            role: queue.role,
            name: dead_letter.name.clone(),
            visibility_timeout_secs: 30,
            // Dead letters are kept as long as SQS allows, for an operator to look at.
            message_retention_secs: 14 * 24 * 3600,
            dead_letter: None,
        };
        let (dlq_url, _) = Box::pin(ensure_queue(client, &dlq)).await?;
        let arn = queue_arn(client, &dlq_url).await?;
        let redrive = serde_json::json!({
            "deadLetterTargetArn": arn,
            "maxReceiveCount": dead_letter.max_receive_count.to_string(),
        });
        attributes.push((QueueAttributeName::RedrivePolicy, redrive.to_string()));
    }

    let existing = client.get_queue_url().queue_name(&queue.name).send().await;
    match existing {
        Ok(out) => {
            let url = out.queue_url().unwrap_or_default().to_owned();
            client
                .set_queue_attributes()
                .queue_url(&url)
                .set_attributes(Some(attributes.into_iter().collect()))
                .send()
                .await
                .map_err(|e| aws_error("SetQueueAttributes", &queue.name, e))?;
            Ok((url, false))
        }
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_queue_does_not_exist()) =>
        {
            let out = client
                .create_queue()
                .queue_name(&queue.name)
                .set_attributes(Some(attributes.into_iter().collect()))
                .send()
                .await
                .map_err(|e| aws_error("CreateQueue", &queue.name, e))?;
            Ok((out.queue_url().unwrap_or_default().to_owned(), true))
        }
        Err(err) => Err(aws_error("GetQueueUrl", &queue.name, err)),
    }
}

async fn queue_arn(client: &aws_sdk_sqs::Client, url: &str) -> Result<String, ProvisionError> {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| aws_error("GetQueueAttributes", url, e))?;
    out.attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| ProvisionError::Aws {
            operation: "GetQueueAttributes",
            resource: url.to_owned(),
            message: "no QueueArn in the answer".to_owned(),
        })
}

/// Writes the parameter's default unless it exists: an operator's value is never overwritten.
pub async fn ensure_parameter(
    client: &aws_sdk_ssm::Client,
    parameter: &ParameterDef,
) -> Result<bool, ProvisionError> {
    let result = client
        .put_parameter()
        .name(&parameter.name)
        .description(parameter.description)
        .value(&parameter.default_value)
        .r#type(ParameterType::String)
        .overwrite(false)
        .send()
        .await;
    match result {
        Ok(_) => Ok(true),
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_parameter_already_exists()) =>
        {
            Ok(false)
        }
        Err(err) => Err(aws_error("PutParameter", &parameter.name, err)),
    }
}

/// Creates the agents' launch template of a local stage in the emulator's EC2 unless it exists,
/// so that the scaler of `titus local up --scaler` can launch instances (they run no agent: the
/// scaler terminates them after its registration timeout). In AWS the CDK app or Terraform make
/// the real one. Returns whether it created it.
pub async fn ensure_local_launch_template(
    ec2: &aws_sdk_ec2::Client,
    name: &str,
) -> Result<bool, ProvisionError> {
    let existing = ec2
        .describe_launch_templates()
        .launch_template_names(name)
        .send()
        .await;
    if let Ok(out) = existing {
        if !out.launch_templates().is_empty() {
            return Ok(false);
        }
    }
    let image = crate::ec2::first_amazon_image(ec2)
        .await
        .map_err(|e| aws_error("DescribeImages", name, e))?
        .ok_or_else(|| ProvisionError::Aws {
            operation: "DescribeImages",
            resource: name.to_owned(),
            message: "the emulator offers no Amazon image to launch".to_owned(),
        })?;
    ec2.create_launch_template()
        .launch_template_name(name)
        .launch_template_data(
            aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                .image_id(image)
                .instance_type(aws_sdk_ec2::types::InstanceType::M7gLarge)
                .build(),
        )
        .send()
        .await
        .map_err(|e| aws_error("CreateLaunchTemplate", name, e))?;
    Ok(true)
}
