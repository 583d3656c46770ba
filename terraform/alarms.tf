# One alarm per dead-letter queue (any message) and one per function (any error), to the SNS
# topic titus-{stage}-alarms.

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
