# One alarm per dead-letter queue (any message) and one per function (any error), the event
# feed's DLQ and stream lag, and the control plane's own metrics, to the SNS topic
# titus-{stage}-alarms; and the dashboard titus-{stage}. As the CDK stack's alarms() has them.

resource "aws_sns_topic" "alarms" {
  count = local.compute ? 1 : 0

  name         = "titus-${local.stage}-alarms"
  display_name = "Titus ${local.stage} alarms"
}

# TLS only (CDK's enforceSSL).
resource "aws_sns_topic_policy" "alarms" {
  count = local.compute ? 1 : 0

  arn = aws_sns_topic.alarms[0].arn
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Deny"
      Principal = { AWS = "*" }
      Action    = "sns:Publish"
      Resource  = aws_sns_topic.alarms[0].arn
      Condition = { Bool = { "aws:SecureTransport" = "false" } }
    }]
  })
}

resource "aws_sns_topic_subscription" "alarm_email" {
  count = local.compute && var.alarm_email != null ? 1 : 0

  topic_arn = aws_sns_topic.alarms[0].arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

resource "aws_cloudwatch_metric_alarm" "dead_letters" {
  for_each = local.compute ? local.dead_letter_queues : {}

  alarm_name          = "titus-${local.stage}-${each.key}-dead-letters"
  alarm_description   = "Messages of the ${each.key} queue could not be processed and are kept in ${each.value.dead_letter_name}; read their reason, fix, then redrive"
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.dead_letter[each.key].name }
  period              = 300
  statistic           = "Maximum"
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  evaluation_periods  = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms[0].arn]
}

resource "aws_cloudwatch_metric_alarm" "errors" {
  for_each = local.compute_functions

  alarm_name          = "titus-${local.stage}-${each.key}-errors"
  alarm_description   = "The ${each.key} function failed; its log group /aws/lambda/titus-${local.stage}-${each.key} says why"
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.this[each.key].function_name }
  period              = 300
  statistic           = "Sum"
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  evaluation_periods  = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms[0].arn]
}

# One alarm on one metric each: the event feed's (its DLQ, its streams' lag) and the control
# plane's own, from the EMF lines the functions print after each invocation and the agents
# write to their log group (namespace Titus, dimension Stage).
locals {
  titus_alarms = local.compute ? {
    events-dead-letters = {
      description = "The events function gave up on stream records (10 retries, or a day old): their events are missing from the feed. ${try(aws_sqs_queue.events_dead_letter[0].name, "")} names their stream, shard and sequence numbers; read them from the stream within its 24 hours"
      namespace   = "AWS/SQS"
      metric      = "ApproximateNumberOfMessagesVisible"
      dimensions  = { QueueName = try(aws_sqs_queue.events_dead_letter[0].name, "") }
      statistic   = "Maximum"
      period      = 300
      threshold   = 0
      comparison  = "GreaterThanThreshold"
      periods     = 1
      missing     = "notBreaching"
    }
    # The feed lags: the oldest record the events function read from a stream was more than a
    # minute old, for 5 minutes (the function failing or too slow; records expire after 24 hours).
    events-iterator-age = {
      description = "The event feed is more than a minute behind the tables' streams for 5 minutes; /aws/lambda/titus-${local.stage}-events says why (stream records expire after 24 hours)"
      namespace   = "AWS/Lambda"
      metric      = "IteratorAge"
      dimensions  = { FunctionName = try(aws_lambda_function.this["events"].function_name, "") }
      statistic   = "Maximum"
      period      = 60
      threshold   = 60000
      comparison  = "GreaterThanThreshold"
      periods     = 5
      missing     = "notBreaching"
    }
    scheduler-lease-not-held = {
      description = "No scheduler tick held the lease for 5 minutes: nothing is being placed. Check the scheduler loop state machine and the scheduler function log"
      namespace   = "Titus"
      metric      = "LeaseHeld"
      dimensions  = { Stage = local.stage }
      statistic   = "Maximum"
      period      = 60
      threshold   = 1
      comparison  = "LessThanThreshold"
      periods     = 5
      # No tick at all is the loop not running: as bad as a tick without the lease.
      missing = "breaching"
    }
    oldest-pending-too-old = {
      description = "A pending task has waited more than 15 minutes; `titus task get` or GET /api/v3/scheduler/results/{id} says why"
      namespace   = "Titus"
      metric      = "OldestPendingAgeMs"
      dimensions  = { Stage = local.stage }
      statistic   = "Maximum"
      period      = 300
      threshold   = 900000
      comparison  = "GreaterThanThreshold"
      periods     = 3
      missing     = "notBreaching"
    }
    # One failed tick can be a blip; 3 or more in 5 minutes is the loop failing.
    tick-errors = {
      description = "Scheduler ticks failed 3 or more times in 5 minutes; /aws/lambda/titus-${local.stage}-scheduler says why"
      namespace   = "Titus"
      metric      = "TickErrors"
      dimensions  = { Stage = local.stage }
      statistic   = "Sum"
      period      = 300
      threshold   = 3
      comparison  = "GreaterThanOrEqualToThreshold"
      periods     = 1
      missing     = "notBreaching"
    }
  } : {}
}

resource "aws_cloudwatch_metric_alarm" "titus" {
  for_each = local.titus_alarms

  alarm_name          = "titus-${local.stage}-${each.key}"
  alarm_description   = each.value.description
  namespace           = each.value.namespace
  metric_name         = each.value.metric
  dimensions          = each.value.dimensions
  period              = each.value.period
  statistic           = each.value.statistic
  threshold           = each.value.threshold
  comparison_operator = each.value.comparison
  evaluation_periods  = each.value.periods
  treat_missing_data  = each.value.missing
  alarm_actions       = [aws_sns_topic.alarms[0].arn]
}

# The event feed's alarms were resources of their own in events.tf.
moved {
  from = aws_cloudwatch_metric_alarm.events_dead_letters[0]
  to   = aws_cloudwatch_metric_alarm.titus["events-dead-letters"]
}

moved {
  from = aws_cloudwatch_metric_alarm.events_iterator_age[0]
  to   = aws_cloudwatch_metric_alarm.titus["events-iterator-age"]
}

# The dashboard, laid out as the CDK stack's: rows of two graphs (12 wide, 6 high), then the
# alarms' states. Every Titus metric is one value a minute: counters as Sum, gauges as Maximum.
# A metric is [name, statistic, period (s)]: Titus metrics of the stage, or with `queues`, one line
# per dead-letter queue (the declared queues' in definitions.json's order, then the events DLQ).
# CloudWatch's default period, 300 s, is left out of a metric, as CDK leaves it out.
locals {
  dashboard_dead_letter_queues = concat(
    [for q in local.definitions.queues : aws_sqs_queue.dead_letter[q.role].name if local.queues[q.role].dead_letter_name != null],
    [for q in aws_sqs_queue.events_dead_letter : q.name],
  )
  dashboard_rows = [
    [
      { title = "Placements per minute", titus = [["TasksPlaced", "Sum", 60], ["PlacementConflicts", "Sum", 60], ["TasksMaterialized", "Sum", 60]] },
      { title = "Pending tasks", titus = [["TasksPending", "Maximum", 60], ["TasksUnplaced", "Maximum", 60]] },
    ],
    [
      { title = "Oldest pending task (ms)", titus = [["OldestPendingAgeMs", "Maximum", 60]] },
      { title = "Submit to Launched, slowest per tick (ms)", titus = [["SubmitToLaunchedMaxMs", "Maximum", 60], ["SubmitToLaunchedMaxMs", "p50", 60]] },
    ],
    [
      { title = "Tick duration (ms)", titus = [["TickDurationMs", "p50", 60], ["TickDurationMs", "p99", 60]] },
      { title = "Lease", titus = [["LeaseHeld", "Minimum", 60], ["LeaseRenewals", "Sum", 60], ["LeaseTakeovers", "Sum", 60], ["TickErrors", "Sum", 60]] },
    ],
    [
      { title = "Lost and stuck", titus = [["AgentsLost", "Sum", 300], ["TasksLost", "Sum", 300], ["TasksStuck", "Sum", 300], ["ReconcileErrors", "Sum", 300]] },
      { title = "Dead letters", queues = ["ApproximateNumberOfMessagesVisible", "Maximum", 300] },
    ],
    [
      { title = "Intake per minute", titus = [["JobsAccepted", "Sum", 60], ["SubmissionsRejected", "Sum", 60]] },
      { title = "API requests per minute", titus = [["ApiRequests", "Sum", 60], ["ApiClientErrors", "Sum", 60], ["ApiServerErrors", "Sum", 60]] },
    ],
    [
      { title = "API latency, slowest per minute (ms)", titus = [["ApiLatencyMaxMs", "Maximum", 60]] },
      { title = "Status updates per minute", titus = [["StatusUpdatesApplied", "Sum", 60], ["StatusUpdatesIgnored", "Sum", 60]] },
    ],
    [
      { title = "Events per minute", titus = [["EventsWritten", "Sum", 60], ["EventsPublished", "Sum", 60]] },
      { title = "Event stream age (ms)", titus = [["EventStreamAgeMs", "Maximum", 60]] },
    ],
    [
      { title = "Scaler", titus = [["AgentsLaunched", "Sum", 60], ["AgentsTerminated", "Sum", 60], ["PoolAgentsDesired", "Maximum", 60]] },
      # Each agent reports its running tasks once a minute: the Sum is the fleet's.
      { title = "Agents", titus = [["AgentTasksRunning", "Sum", 60], ["AgentLaunchFailures", "Sum", 60], ["AgentHeartbeatFailures", "Sum", 60]] },
    ],
    [
      { title = "Image pull, slowest per minute (ms)", titus = [["AgentImagePullMaxMs", "Maximum", 60]] },
      # NumberOfMessagesSent counts SendMessage calls (the status function's reasoned dead
      # letters, the stream mappings' failures), not SQS's own redrive after maxReceiveCount
      # receives: those show in "Dead letters" above and in the dead-letter alarms.
      { title = "Dead letters sent per minute", queues = ["NumberOfMessagesSent", "Sum", 60] },
    ],
  ]
  dashboard_graphs = flatten([
    for y, row in local.dashboard_rows : [
      for x, g in row : {
        type   = "metric"
        width  = 12
        height = 6
        x      = 12 * x
        y      = 6 * y
        properties = {
          view   = "timeSeries"
          title  = g.title
          region = local.region
          metrics = concat(
            [for m in try(g.titus, []) : ["Titus", m[0], "Stage", local.stage, merge({ stat = m[1] }, m[2] == 300 ? {} : { period = m[2] })]],
            [for q in(can(g.queues) ? local.dashboard_dead_letter_queues : []) : ["AWS/SQS", g.queues[0], "QueueName", q, merge({ stat = g.queues[1] }, g.queues[2] == 300 ? {} : { period = g.queues[2] })]],
          )
          yAxis = {}
        }
      }
    ]
  ])
  # The alarms' ARNs from their names, so that the body is known when planned.
  dashboard_alarms = [
    for name in ["scheduler-lease-not-held", "oldest-pending-too-old", "tick-errors"] :
    "arn:${local.partition}:cloudwatch:${local.region}:${local.account}:alarm:titus-${local.stage}-${name}"
  ]
}

resource "aws_cloudwatch_dashboard" "this" {
  count = local.compute ? 1 : 0

  dashboard_name = "titus-${local.stage}"
  dashboard_body = jsonencode({ widgets = concat(local.dashboard_graphs, [{
    type       = "alarm"
    width      = 24
    height     = 3
    x          = 0
    y          = 6 * length(local.dashboard_rows)
    properties = { title = "Alarms", alarms = local.dashboard_alarms }
  }]) })

  depends_on = [aws_cloudwatch_metric_alarm.titus]
}
