# One alarm per dead-letter queue (any message) and one per function (any error), to the SNS
# topic titus-{stage}-alarms (the event feed's DLQ and stream-lag alarms are in events.tf).

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

# The control plane's own metrics, from the EMF lines the scheduler and the reconciler print
# after each invocation (namespace Titus, dimension Stage), as the CDK stack's alarms() has them.
locals {
  titus_alarms = local.compute ? {
    scheduler-lease-not-held = {
      description = "No scheduler tick held the lease for 5 minutes: nothing is being placed. Check the scheduler loop state machine and the scheduler function log"
      metric      = "LeaseHeld"
      period      = 60
      threshold   = 1
      comparison  = "LessThanThreshold"
      periods     = 5
      # No tick at all is the loop not running: as bad as a tick without the lease.
      missing = "breaching"
    }
    oldest-pending-too-old = {
      description = "A pending task has waited more than 15 minutes; `titus task get` or GET /api/v3/scheduler/results/{id} says why"
      metric      = "OldestPendingAgeMs"
      period      = 300
      threshold   = 900000
      comparison  = "GreaterThanThreshold"
      periods     = 3
      missing     = "notBreaching"
    }
  } : {}
}

resource "aws_cloudwatch_metric_alarm" "titus" {
  for_each = local.titus_alarms

  alarm_name          = "titus-${local.stage}-${each.key}"
  alarm_description   = each.value.description
  namespace           = "Titus"
  metric_name         = each.value.metric
  dimensions          = { Stage = local.stage }
  period              = each.value.period
  statistic           = "Maximum"
  threshold           = each.value.threshold
  comparison_operator = each.value.comparison
  evaluation_periods  = each.value.periods
  treat_missing_data  = each.value.missing
  alarm_actions       = [aws_sns_topic.alarms[0].arn]
}

locals {
  # One graph widget of the dashboard: Titus metrics by name and statistic, 12 wide.
  titus_graph = { for title, metrics in {
    "Placements per minute"                     = [["TasksPlaced", "Sum"], ["PlacementConflicts", "Sum"], ["TasksMaterialized", "Sum"]]
    "Pending tasks"                             = [["TasksPending", "Maximum"], ["TasksUnplaced", "Maximum"]]
    "Oldest pending task (ms)"                  = [["OldestPendingAgeMs", "Maximum"]]
    "Submit to Launched, slowest per tick (ms)" = [["SubmitToLaunchedMaxMs", "Maximum"], ["SubmitToLaunchedMaxMs", "p50"]]
    "Tick duration (ms)"                        = [["TickDurationMs", "p50"], ["TickDurationMs", "p99"]]
    "Lease"                                     = [["LeaseHeld", "Minimum"], ["LeaseTakeovers", "Sum"], ["TickErrors", "Sum"]]
    "Lost and stuck"                            = [["AgentsLost", "Sum"], ["TasksLost", "Sum"], ["TasksStuck", "Sum"], ["ReconcileErrors", "Sum"]]
    } : title => {
    type   = "metric"
    width  = 12
    height = 6
    properties = {
      title   = title
      region  = local.region
      view    = "timeSeries"
      period  = 60
      metrics = [for m in metrics : ["Titus", m[0], "Stage", local.stage, { stat = m[1] }]]
    }
  } }
}

resource "aws_cloudwatch_dashboard" "this" {
  count = local.compute ? 1 : 0

  dashboard_name = "titus-${local.stage}"
  dashboard_body = jsonencode({ widgets = values(local.titus_graph) })
}
