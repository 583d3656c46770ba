# The data plane: tables, queues and parameters. Always created (deploy_compute=false creates
# only these, e.g. against the emulator).

resource "aws_dynamodb_table" "this" {
  for_each = local.tables

  name                        = each.value.name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = each.value.partition_key
  range_key                   = each.value.sort_key
  deletion_protection_enabled = var.retain_data
  stream_enabled              = each.value.stream
  stream_view_type            = each.value.stream ? "NEW_AND_OLD_IMAGES" : null

  dynamic "attribute" {
    for_each = each.value.attributes
    content {
      name = attribute.value
      type = "S"
    }
  }

  dynamic "global_secondary_index" {
    for_each = each.value.indexes
    content {
      name            = global_secondary_index.value.name
      hash_key        = global_secondary_index.value.partition_key
      range_key       = global_secondary_index.value.sort_key
      projection_type = "ALL"
    }
  }

  point_in_time_recovery {
    enabled = true
  }

  dynamic "ttl" {
    for_each = each.value.ttl_attribute == null ? [] : [each.value.ttl_attribute]
    content {
      attribute_name = ttl.value
      enabled        = true
    }
  }
}

# Dead letters are kept as long as SQS allows (14 days), for an operator to look at.
resource "aws_sqs_queue" "dead_letter" {
  for_each = local.dead_letter_queues

  name                      = each.value.dead_letter_name
  message_retention_seconds = 14 * 24 * 3600
  sqs_managed_sse_enabled   = true
}

resource "aws_sqs_queue" "this" {
  for_each = local.queues

  name                       = each.value.name
  visibility_timeout_seconds = each.value.visibility_timeout
  message_retention_seconds  = each.value.message_retention
  sqs_managed_sse_enabled    = true
  redrive_policy = each.value.dead_letter_name == null ? null : jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dead_letter[each.key].arn
    maxReceiveCount     = each.value.dead_letter_receives
  })
}

# TLS only (CDK's enforceSSL).
locals {
  all_queues = merge(
    { for role, q in aws_sqs_queue.this : role => q },
    { for role, q in aws_sqs_queue.dead_letter : "${role}-dlq" => q },
    # The events function's (events.tf), with the compute half only.
    { for q in aws_sqs_queue.events_dead_letter : "events-dlq" => q },
  )
}

resource "aws_sqs_queue_policy" "tls_only" {
  for_each = local.all_queues

  queue_url = each.value.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Deny"
      Principal = { AWS = "*" }
      Action    = "sqs:*"
      Resource  = each.value.arn
      Condition = { Bool = { "aws:SecureTransport" = "false" } }
    }]
  })
}

# The parameters: the Rust defaults, with what only the deployment knows, then var.parameters.
locals {
  # JSON objects merged over a default value (CDK's merge()): keys of the value are replaced.
  deployment_merges = {
    # A status or an agent request is believed only from the agent instance role's session of
    # the agent it names: `{role id}:{instance id}`, as SQS reports the sender.
    "/control/rules" = jsonencode({ for k, v in { agent_role_id = try(aws_iam_role.agent[0].unique_id, "") } : k => v if local.compute })
    # Task logs go to CloudWatch Logs, and the agents' metrics (EMF lines) to their own group
    # (the groups exist only with the compute half).
    "/agent/config" = jsonencode({ for k, v in {
      log_driver        = "awslogs"
      awslogs_group     = local.task_log_group_name
      metrics_log_group = local.agent_log_group_name
    } : k => v if local.compute })
    # The default pool launches into the given subnets from the launch template, on instance
    # types of the architecture (the AMI's).
    "/scaler/pools/default" = jsonencode({
      subnet_ids      = var.subnet_ids
      launch_template = local.launch_template
      instance_types  = local.architectures[var.architecture].instance_types
    })
  }
  merge_json = {
    for suffix, p in local.parameter_defaults : suffix => (
      contains(keys(local.deployment_merges), suffix)
      ? (local.deployment_merges[suffix] == "{}" ? p.value : jsonencode(merge(jsondecode(p.value), jsondecode(local.deployment_merges[suffix]))))
      : p.value
    )
  }
  deployed_values = merge(local.merge_json, {
    # In AWS callers are named by API Gateway's IAM authorization: no bearer tokens.
    "/api/identities" = "{}"
  })
  parameter_values = {
    for suffix, value in local.deployed_values : suffix => (
      contains(keys(var.parameters), suffix)
      ? try(jsonencode(merge(jsondecode(value), jsondecode(var.parameters[suffix]))), var.parameters[suffix])
      : value
    )
  }
  unknown_parameter_overrides = setsubtract(keys(var.parameters), keys(local.parameter_defaults))
}

resource "aws_ssm_parameter" "this" {
  for_each = local.parameter_defaults

  name        = each.value.name
  description = each.value.description
  type        = "String"
  tier        = "Standard"
  value       = local.parameter_values[each.key]

  lifecycle {
    precondition {
      condition     = length(local.unknown_parameter_overrides) == 0
      error_message = "var.parameters names no parameter of definitions.json: ${join(", ", local.unknown_parameter_overrides)}."
    }
  }
}
