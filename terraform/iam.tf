# Least privilege per function and for the agent, statement by statement as the CDK stack grants
# it (infra/lib/titus-stack.ts grantFunctions, grantAgent, and what its constructs add: each
# function's own log group, SQS event sources' consume grants, the stream event sources' read
# grants and their on-failure destination's send grant).

locals {
  read  = ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:ConditionCheckItem"]
  write = ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"]
  scan  = ["dynamodb:Scan"]

  table_arn = { for role, t in aws_dynamodb_table.this : role => t.arn }
  # A table and its indexes.
  table_arns = { for role, arn in local.table_arn : role => [arn, "${arn}/index/*"] }
  # The streams of the event feed's tables (events.tf).
  stream_arns = [for role in keys(local.streamed_tables) : aws_dynamodb_table.this[role].stream_arn]

  arn_prefix        = "arn:${local.partition}"
  parameter_arn     = "${local.arn_prefix}:ssm:${local.region}:${local.account}:parameter"
  agent_queues_arn  = "${local.arn_prefix}:sqs:${local.region}:${local.account}:titus-${local.stage}-agent-*"
  ec2_arn           = "${local.arn_prefix}:ec2:${local.region}:${local.account}"
  param             = { for suffix, p in local.parameter_defaults : suffix => "${local.parameter_arn}${p.name}" }
  ssm_read          = ["ssm:GetParameters", "ssm:GetParameter"]
  consume_queue     = ["sqs:ReceiveMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueUrl", "sqs:DeleteMessage", "sqs:GetQueueAttributes"]
  function_log_arns = { for role, g in aws_cloudwatch_log_group.function : role => "${g.arn}:*" }
  # The task log group and its streams (the group exists only with the compute half).
  task_log_read_arns = flatten([for g in aws_cloudwatch_log_group.tasks : ["${g.arn}:*", "${local.arn_prefix}:logs:${local.region}:${local.account}:log-group:${g.name}:log-stream:*"]])

  # Every function builds the control plane from the same six parameters (titus-app's
  # settings::load): the job limits and policies, the rules, the scheduler's tunables.
  control_plane_settings = [
    local.param["/limits/job"],
    local.param["/policy/jobs"],
    local.param["/policy/teams"],
    local.param["/policy/quotas"],
    local.param["/control/rules"],
    local.param["/scheduler/config"],
  ]

  # Active X-Ray tracing on every function; X-Ray supports no resource-level permissions.
  xray_statement = {
    Effect   = "Allow"
    Action   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    Resource = "*"
  }

  # Each function writes only to its own log group (CDK's logGroupArn ends in ":*").
  log_statement = { for role in keys(local.functions) : role => {
    Effect   = "Allow"
    Action   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    Resource = try(local.function_log_arns[role], "")
  } }

  status_and_reconciler = [
    { Effect = "Allow", Action = concat(local.read, local.write), Resource = flatten([local.table_arns.jobs, local.table_arns.tasks, local.table_arns.leases]) },
    # A job's finish releases what it held, in the same transaction.
    { Effect = "Allow", Action = ["dynamodb:UpdateItem", "dynamodb:GetItem"], Resource = local.table_arn["quota-usage"] },
    { Effect = "Allow", Action = concat(local.read, local.scan, local.write), Resource = flatten([local.table_arns.agents, local.table_arns.heartbeats]) },
    { Effect = "Allow", Action = ["sqs:SendMessage", "sqs:GetQueueUrl"], Resource = local.agent_queues_arn },
    { Effect = "Allow", Action = local.ssm_read, Resource = local.control_plane_settings },
  ]

  function_statements = {
    # api: jobs and tasks, reading agents, kill commands to agents' queues.
    api = [
      local.log_statement.api,
      { Effect = "Allow", Action = concat(local.read, local.write), Resource = flatten([local.table_arns.jobs, local.table_arns.tasks, local.table_arns.idempotency]) },
      # Per-caller rate limits: one conditional counter update per request.
      { Effect = "Allow", Action = ["dynamodb:UpdateItem"], Resource = local.table_arn["rate-limits"] },
      # Quota usage: changed with each job write, read back to name a refused quota, listed.
      { Effect = "Allow", Action = concat(["dynamodb:UpdateItem", "dynamodb:GetItem"], local.scan), Resource = local.table_arn["quota-usage"] },
      { Effect = "Allow", Action = concat(local.read, local.scan), Resource = flatten([local.table_arns.agents, local.table_arns.heartbeats]) },
      # Why a task waits: the scheduler's placement results, read one job at a time.
      { Effect = "Allow", Action = ["dynamodb:GetItem"], Resource = local.table_arn["placement-results"] },
      # The event feed: a job's events, or every job's of a minute, in order.
      { Effect = "Allow", Action = ["dynamodb:Query"], Resource = local.table_arn.events },
      { Effect = "Allow", Action = ["sqs:SendMessage"], Resource = local.agent_queues_arn },
      # A task's output (GET /api/v3/tasks/{id}/logs): its stream {jobId}/{taskId} of the task log
      # group, read only. The group's ARN (CDK's ends in :*) for DescribeLogStreams, its streams'
      # for GetLogEvents.
      { Effect = "Allow", Action = ["logs:GetLogEvents", "logs:DescribeLogStreams"], Resource = local.task_log_read_arns },
      { Effect = "Allow", Action = local.ssm_read, Resource = concat(local.control_plane_settings, [local.param["/api/identities"], local.param["/api/admins"], local.param["/api/rate-limits"]]) },
    ]
    # submit: creates jobs; refused descriptors go to the rejected queue.
    submit = [
      local.log_statement.submit,
      { Effect = "Allow", Action = concat(local.read, local.write), Resource = flatten([local.table_arns.jobs, local.table_arns.tasks, local.table_arns.idempotency]) },
      { Effect = "Allow", Action = ["dynamodb:UpdateItem", "dynamodb:GetItem"], Resource = local.table_arn["quota-usage"] },
      { Effect = "Allow", Action = ["sqs:GetQueueUrl", "sqs:SendMessage"], Resource = aws_sqs_queue.this["submit-rejected"].arn },
      { Effect = "Allow", Action = local.ssm_read, Resource = local.control_plane_settings },
      # Its event source: the submit queue.
      { Effect = "Allow", Action = local.consume_queue, Resource = aws_sqs_queue.this["submit"].arn },
    ]
    # scheduler: the lease, new jobs' tasks, placements, dispatch to agents.
    scheduler = [
      local.log_statement.scheduler,
      { Effect = "Allow", Action = concat(local.read, ["dynamodb:UpdateItem"]), Resource = local.table_arns.jobs },
      { Effect = "Allow", Action = concat(local.read, local.write), Resource = flatten([local.table_arns.tasks, local.table_arns.leases]) },
      { Effect = "Allow", Action = concat(local.read, local.scan, ["dynamodb:UpdateItem"]), Resource = local.table_arns.agents },
      { Effect = "Allow", Action = concat(local.read, local.scan), Resource = local.table_arns.heartbeats },
      { Effect = "Allow", Action = ["sqs:SendMessage"], Resource = local.agent_queues_arn },
      # Placement results: written (put and removed) in batches when a job's answer changes.
      { Effect = "Allow", Action = ["dynamodb:BatchWriteItem", "dynamodb:PutItem", "dynamodb:DeleteItem"], Resource = local.table_arn["placement-results"] },
      { Effect = "Allow", Action = local.ssm_read, Resource = local.control_plane_settings },
    ]
    # status: task states, releases, replacements, kills, lost agents; registers agents
    # (creating each one's queue and its DLQ); a message that can never apply goes to its DLQ.
    status = concat([local.log_statement.status], local.status_and_reconciler, [
      { Effect = "Allow", Action = ["sqs:CreateQueue", "sqs:GetQueueAttributes", "sqs:SetQueueAttributes"], Resource = local.agent_queues_arn },
      { Effect = "Allow", Action = ["sqs:GetQueueUrl", "sqs:SendMessage"], Resource = aws_sqs_queue.dead_letter["status"].arn },
      # Its event sources: the status and registrations queues.
      { Effect = "Allow", Action = local.consume_queue, Resource = aws_sqs_queue.this["status"].arn },
      { Effect = "Allow", Action = local.consume_queue, Resource = aws_sqs_queue.this["registrations"].arn },
    ])
    reconciler = concat([local.log_statement.reconciler], local.status_and_reconciler)
    # events: each change becomes an event of its job's feed and of the feed of every job, and
    # is published to the bus; a task's event carries its job's owner, read from the job.
    events = [
      local.log_statement.events,
      { Effect = "Allow", Action = ["dynamodb:BatchWriteItem", "dynamodb:PutItem"], Resource = local.table_arn.events },
      { Effect = "Allow", Action = ["dynamodb:GetItem"], Resource = local.table_arn.jobs },
      # Its control plane loads the stage's settings at start, as every function's does.
      { Effect = "Allow", Action = local.ssm_read, Resource = local.control_plane_settings },
      # Its event sources: the streams of the tables definitions.json marks (CDK's grantStreamRead).
      { Effect = "Allow", Action = ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"], Resource = local.stream_arns },
      # ListStreams supports no resource-level permissions.
      { Effect = "Allow", Action = ["dynamodb:ListStreams"], Resource = "*" },
      # Their on-failure destination (CDK's SqsDlq grant).
      { Effect = "Allow", Action = ["sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"], Resource = try(aws_sqs_queue.events_dead_letter[0].arn, "") },
      { Effect = "Allow", Action = ["events:PutEvents"], Resource = try(aws_cloudwatch_event_bus.events[0].arn, "") },
    ]
    # scaler: reads demand, drains and deregisters agents, its lease and state, EC2.
    scaler = [
      local.log_statement.scaler,
      { Effect = "Allow", Action = local.read, Resource = flatten([local.table_arns.jobs, local.table_arns.tasks]) },
      { Effect = "Allow", Action = concat(local.read, local.scan, ["dynamodb:UpdateItem", "dynamodb:DeleteItem"]), Resource = flatten([local.table_arns.agents, local.table_arns.heartbeats]) },
      { Effect = "Allow", Action = ["dynamodb:GetItem", "dynamodb:UpdateItem"], Resource = local.table_arn.leases },
      { Effect = "Allow", Action = local.ssm_read, Resource = local.control_plane_settings },
      { Effect = "Allow", Action = ["ssm:GetParametersByPath"], Resource = "${local.parameter_arn}/titus/${local.stage}/scaler" },
      { Effect = "Allow", Action = ["ssm:GetParametersByPath", "ssm:GetParameters", "ssm:GetParameter"], Resource = "${local.parameter_arn}/titus/${local.stage}/scaler/*" },
      {
        Effect = "Allow"
        Action = [
          "ec2:DescribeInstances",
          "ec2:DescribeInstanceTypes",
          "ec2:DescribeSubnets",
          "ec2:DescribeLaunchTemplates",
          "ec2:DescribeLaunchTemplateVersions",
          "ec2:DescribeImages",
        ]
        Resource = "*"
      },
      # Launches: the instances must carry the stage's tag; the rest of what a launch touches
      # is named by the launch template and the pool's subnets.
      {
        Effect    = "Allow"
        Action    = ["ec2:CreateFleet", "ec2:RunInstances"]
        Resource  = "${local.ec2_arn}:instance/*"
        Condition = { StringEquals = { "aws:RequestTag/${local.tag_stage}" = local.stage, "aws:RequestTag/${local.tag_managed_by}" = local.managed_by } }
      },
      {
        Effect = "Allow"
        Action = ["ec2:CreateFleet", "ec2:RunInstances"]
        Resource = [
          "${local.ec2_arn}:launch-template/${try(aws_launch_template.agent[0].id, "")}",
          "${local.ec2_arn}:fleet/*",
          "${local.ec2_arn}:volume/*",
          "${local.ec2_arn}:network-interface/*",
          "${local.ec2_arn}:subnet/*",
          "${local.ec2_arn}:security-group/*",
          "${local.ec2_arn}:spot-instances-request/*",
          "${local.arn_prefix}:ec2:${local.region}::image/*",
        ]
      },
      {
        Effect    = "Allow"
        Action    = ["ec2:CreateTags"]
        Resource  = ["${local.ec2_arn}:instance/*", "${local.ec2_arn}:fleet/*", "${local.ec2_arn}:volume/*", "${local.ec2_arn}:spot-instances-request/*"]
        Condition = { StringEquals = { "ec2:CreateAction" = ["CreateFleet", "RunInstances"] } }
      },
      # Terminations: only the stage's instances that the scaler launched.
      {
        Effect    = "Allow"
        Action    = ["ec2:TerminateInstances"]
        Resource  = "${local.ec2_arn}:instance/*"
        Condition = { StringEquals = { "aws:ResourceTag/${local.tag_stage}" = local.stage, "aws:ResourceTag/${local.tag_managed_by}" = local.managed_by } }
      },
      {
        Effect    = "Allow"
        Action    = ["iam:PassRole"]
        Resource  = try(aws_iam_role.agent[0].arn, "")
        Condition = { StringEquals = { "iam:PassedToService" = "ec2.amazonaws.com" } }
      },
      {
        Effect    = "Allow"
        Action    = ["iam:CreateServiceLinkedRole"]
        Resource  = "${local.arn_prefix}:iam::${local.account}:role/aws-service-role/spot.amazonaws.com/*"
        Condition = { StringEquals = { "iam:AWSServiceName" = "spot.amazonaws.com" } }
      },
    ]
  }
}

# The agent role. A fixed name: task roles' trust policies name it (infra/README.md, "Task IAM
# roles").
resource "aws_iam_role" "agent" {
  count = local.compute ? 1 : 0

  name        = local.agent_role_name
  description = "Titus ${local.stage} agent instances"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ec2.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_instance_profile" "agent" {
  count = local.compute ? 1 : 0

  name = local.agent_role_name
  role = aws_iam_role.agent[0].name
}

locals {
  own_queue = "${local.arn_prefix}:sqs:${local.region}:${local.account}:titus-${local.stage}-agent-$${ec2:InstanceID}"
}

resource "aws_iam_role_policy" "agent" {
  count = local.compute ? 1 : 0

  name = "titus-agent"
  role = aws_iam_role.agent[0].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      # Only its own queue, named after its instance (the control plane creates it at
      # registration), and that queue's DLQ, where it keeps the commands it cannot apply.
      { Effect = "Allow", Action = ["sqs:GetQueueUrl", "sqs:GetQueueAttributes", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"], Resource = local.own_queue },
      { Effect = "Allow", Action = ["sqs:GetQueueUrl", "sqs:SendMessage"], Resource = "${local.own_queue}-dlq" },
      # Its statuses, and its requests about its own record (register, drain, deregister).
      { Effect = "Allow", Action = ["sqs:GetQueueUrl", "sqs:SendMessage"], Resource = [aws_sqs_queue.this["status"].arn, aws_sqs_queue.this["registrations"].arn] },
      # Its own record, and only its own heartbeat item, keyed by its role session.
      {
        Effect    = "Allow"
        Action    = ["dynamodb:GetItem"]
        Resource  = local.table_arn.agents
        Condition = { "ForAllValues:StringEquals" = { "dynamodb:LeadingKeys" = ["$${ec2:InstanceID}"] } }
      },
      {
        Effect    = "Allow"
        Action    = ["dynamodb:GetItem", "dynamodb:PutItem"]
        Resource  = local.table_arn.heartbeats
        Condition = { "ForAllValues:StringEquals" = { "dynamodb:LeadingKeys" = ["$${aws:userid}"] } }
      },
      # Before it starts or re-adopts a task it reads the task's record.
      { Effect = "Allow", Action = ["dynamodb:GetItem"], Resource = local.table_arn.tasks },
      {
        Effect   = "Allow"
        Action   = ["ssm:GetParametersByPath", "ssm:GetParameters", "ssm:GetParameter"]
        Resource = ["${local.parameter_arn}/titus/${local.stage}/agent", "${local.parameter_arn}/titus/${local.stage}/agent/*"]
      },
      # Images from the account's ECR repositories.
      { Effect = "Allow", Action = ["ecr:GetAuthorizationToken"], Resource = "*" },
      {
        Effect   = "Allow"
        Action   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
        Resource = "${local.arn_prefix}:ecr:${local.region}:${local.account}:repository/*"
      },
      # Task logs (Docker's awslogs driver). CDK's logGroupArn ends in ":*".
      {
        Effect   = "Allow"
        Action   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
        Resource = ["${aws_cloudwatch_log_group.tasks[0].arn}:*", "${aws_cloudwatch_log_group.tasks[0].arn}:*:log-stream:*"]
      },
      # Its metrics: EMF lines to its own stream (named by its agent id) of the agents' group.
      {
        Effect   = "Allow"
        Action   = ["logs:CreateLogStream", "logs:PutLogEvents"]
        Resource = ["${aws_cloudwatch_log_group.agents[0].arn}:*", "${aws_cloudwatch_log_group.agents[0].arn}:*:log-stream:*"]
      },
      # Task credentials: only the account's roles tagged titus:task-role={stage}; the role's own
      # trust policy must also name this role.
      {
        Effect    = "Allow"
        Action    = ["sts:AssumeRole"]
        Resource  = "${local.arn_prefix}:iam::${local.account}:role/*"
        Condition = { StringEquals = { "aws:ResourceTag/${local.tag_task_role}" = local.stage } }
      },
      # Secrets of tasks without a role: only the stage's shared space.
      { Effect = "Allow", Action = ["ssm:GetParameter"], Resource = "${local.parameter_arn}/titus/${local.stage}/secrets/*" },
      {
        Effect   = "Allow"
        Action   = ["secretsmanager:GetSecretValue"]
        Resource = "${local.arn_prefix}:secretsmanager:${local.region}:${local.account}:secret:titus/${local.stage}/secrets/*"
      },
      # The agent binary (CDK: the S3 asset's grantRead).
      {
        Effect   = "Allow"
        Action   = ["s3:GetObject*", "s3:GetBucket*", "s3:List*"]
        Resource = [aws_s3_bucket.artefacts[0].arn, "${aws_s3_bucket.artefacts[0].arn}/*"]
      },
    ]
  })
}
