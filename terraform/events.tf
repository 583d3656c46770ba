# The event feed: every table definitions.json marks with a stream (jobs, tasks, placement
# results) feeds the events function, which writes the events table and publishes each event to
# the bus titus-{stage}-events; as the CDK stack's DynamoEventSource mappings have it. The bus,
# the DLQ and the mappings come with the compute half; the streams are the tables' own (data.tf).

locals {
  streamed_tables = { for role, t in local.tables : role => t if t.stream }
}

# Where a stream batch that keeps failing is recorded: the stream, shard and sequence numbers of
# its records (not the records), kept 14 days like the other dead letters. Not declared by the
# Rust code: only the event source mappings use it.
resource "aws_sqs_queue" "events_dead_letter" {
  count = local.compute ? 1 : 0

  name                      = "titus-${local.stage}-events-dlq"
  message_retention_seconds = 14 * 24 * 3600
  sqs_managed_sse_enabled   = true
}

resource "aws_cloudwatch_event_bus" "events" {
  count = local.compute ? 1 : 0

  name        = "titus-${local.stage}-events"
  description = "Titus ${local.stage}: every change of a job or a task, as the events function reads it from the tables' streams"
}

# A failing batch is halved on each function error (to isolate a bad record) and retried up to
# 10 times while its records are under a day old (the stream keeps them 24 hours); a failed batch
# answers its first record as the failure (batchItemFailures), so it comes again whole, with the
# same events and ids. No batching window: a change should reach the feed at once. What still fails goes to
# the DLQ.
resource "aws_lambda_event_source_mapping" "stream" {
  for_each = local.compute ? local.streamed_tables : {}

  event_source_arn                   = aws_dynamodb_table.this[each.key].stream_arn
  function_name                      = aws_lambda_function.this["events"].arn
  starting_position                  = "TRIM_HORIZON"
  batch_size                         = 100
  maximum_batching_window_in_seconds = 0
  bisect_batch_on_function_error     = true
  maximum_retry_attempts             = 10
  maximum_record_age_in_seconds      = 24 * 3600
  function_response_types            = ["ReportBatchItemFailures"]

  # The agents' stream: only records that can be state changes (definitions.json's filters).
  dynamic "filter_criteria" {
    for_each = length(jsondecode(each.value.stream_filters_json)) > 0 ? [jsondecode(each.value.stream_filters_json)] : []
    content {
      dynamic "filter" {
        for_each = filter_criteria.value
        content {
          pattern = jsonencode(filter.value)
        }
      }
    }
  }

  destination_config {
    on_failure {
      destination_arn = aws_sqs_queue.events_dead_letter[0].arn
    }
  }

  depends_on = [aws_iam_role_policy.function]
}

# Its alarms (the DLQ, the streams' lag) are in alarms.tf.
