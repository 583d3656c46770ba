# The tables, queues and parameters come from infra/definitions.json, the Rust code's own
# declaration (`titus-provision --print-definitions`), renamed from its stage to var.stage as the
# CDK app's forStage does, so this module cannot drift from what the code expects either.

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  root      = coalesce(var.titus_root, "${path.module}/..")
  asset_dir = coalesce(var.asset_dir, "${path.module}/../target/lambda")
  compute   = var.deploy_compute
  stage     = var.stage

  partition = data.aws_partition.current.partition
  region    = data.aws_region.current.name
  account   = data.aws_caller_identity.current.account_id

  definitions = jsondecode(file("${local.root}/infra/definitions.json"))
  from        = local.definitions.stage

  # CDK forStage: titus-{from}- and /titus/{from}/ become the stage's.
  tables = {
    for t in local.definitions.tables : t.role => {
      name          = replace(replace(t.name, "titus-${local.from}-", "titus-${local.stage}-"), "/titus/${local.from}/", "/titus/${local.stage}/")
      partition_key = t.partitionKey
      sort_key      = try(t.sortKey, null)
      ttl_attribute = try(t.ttlAttribute, null)
      # A stream of new and old images: the table's changes feed the events function.
      stream = try(t.stream, false)
      # Lambda event filter patterns for the stream's records (any one matching; none: every
      # record), as one JSON string so that every table's attributes have the same type.
      stream_filters_json = jsonencode(try(t.streamFilters, []))
      indexes = [
        for i in t.globalSecondaryIndexes : {
          name          = i.name
          partition_key = i.partitionKey
          sort_key      = try(i.sortKey, null)
        }
      ]
      # Every key attribute of the table and its indexes, each a string (S).
      attributes = distinct(compact(concat(
        [t.partitionKey, try(t.sortKey, "")],
        flatten([for i in t.globalSecondaryIndexes : [i.partitionKey, try(i.sortKey, "")]]),
      )))
    }
  }

  queues = {
    for q in local.definitions.queues : q.role => {
      name                 = replace(q.name, "titus-${local.from}-", "titus-${local.stage}-")
      visibility_timeout   = q.visibilityTimeoutSecs
      message_retention    = q.messageRetentionSecs
      dead_letter_name     = try(replace(q.deadLetter.name, "titus-${local.from}-", "titus-${local.stage}-"), null)
      dead_letter_receives = try(q.deadLetter.maxReceiveCount, null)
    }
  }
  dead_letter_queues = { for role, q in local.queues : role => q if q.dead_letter_name != null }

  # Parameters by suffix ("/limits/job").
  parameter_defaults = {
    for p in local.definitions.parameters : trimprefix(p.name, "/titus/${local.from}") => {
      name        = "/titus/${local.stage}${trimprefix(p.name, "/titus/${local.from}")}"
      description = substr(p.description, 0, 1024)
      value       = replace(replace(p.defaultValue, "titus-${local.from}-", "titus-${local.stage}-"), "/titus/${local.from}/", "/titus/${local.stage}/")
    }
  }

  architectures = {
    arm64 = {
      ami_parameter  = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64"
      instance_types = ["m7g.large", "m7g.xlarge", "m7g.2xlarge"]
    }
    x86_64 = {
      ami_parameter  = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
      instance_types = ["m7i.large", "m7i.xlarge", "m7i.2xlarge"]
    }
  }

  # The functions: role => binary, timeout (s), memory (MB), as the CDK stack has them.
  functions = {
    api        = { binary = "titus-api-lambda", timeout = 29, memory = 512 }
    submit     = { binary = "titus-submit-lambda", timeout = 30, memory = 256 }
    scheduler  = { binary = "titus-scheduler-lambda", timeout = 55, memory = 1024 }
    status     = { binary = "titus-status-lambda", timeout = 30, memory = 256 }
    reconciler = { binary = "titus-reconciler-lambda", timeout = 120, memory = 512 }
    scaler     = { binary = "titus-scaler-lambda", timeout = 60, memory = 512 }
    events     = { binary = "titus-events-lambda", timeout = 60, memory = 256 }
  }
  compute_functions = local.compute ? local.functions : {}

  # EC2 tags the scaler puts on what it launches (crates/aws resources.rs), and the task roles' tag.
  tag_stage      = "titus:stage"
  tag_pool       = "titus:pool"
  tag_managed_by = "titus:managed-by"
  managed_by     = "titus-scaler"
  tag_task_role  = "titus:task-role"

  agent_role_name     = "titus-${local.stage}-agent"
  launch_template     = "titus-${local.stage}-agent"
  task_log_group_name = "/titus/${local.stage}/tasks"
  # The agents' EMF metrics, one stream per agent (its id).
  agent_log_group_name = "/titus/${local.stage}/agents"
}
