# The functions: one explicit role and log group (30 days) each, from the zips scripts/artefacts.sh
# builds, provided.al2023 on var.architecture, JSON logs at INFO (system logs at WARN).

resource "aws_cloudwatch_log_group" "function" {
  for_each = local.compute_functions

  name              = "/aws/lambda/titus-${local.stage}-${each.key}"
  retention_in_days = 30
}

# An explicit role, so that the function gets only its log group rather than the managed
# basic-execution policy's logs:* on every group.
resource "aws_iam_role" "function" {
  for_each = local.compute_functions

  name_prefix = "titus-${local.stage}-${each.key}-"
  description = "Titus ${local.stage} ${each.key} function"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "lambda.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_role_policy" "function" {
  for_each = local.compute_functions

  name = "titus-${each.key}"
  role = aws_iam_role.function[each.key].id
  policy = jsonencode({
    Version   = "2012-10-17"
    Statement = concat(local.function_statements[each.key], [local.xray_statement])
  })
}

resource "aws_lambda_function" "this" {
  for_each = local.compute_functions

  function_name    = "titus-${local.stage}-${each.key}"
  description      = "Titus ${each.key} (${each.value.binary})"
  runtime          = "provided.al2023"
  architectures    = [var.architecture]
  handler          = "bootstrap"
  filename         = "${local.asset_dir}/${each.value.binary}.zip"
  source_code_hash = filebase64sha256("${local.asset_dir}/${each.value.binary}.zip")
  memory_size      = each.value.memory
  timeout          = each.value.timeout
  role             = aws_iam_role.function[each.key].arn

  # X-Ray: a trace per invocation, with the AWS calls it makes.
  tracing_config {
    mode = "Active"
  }

  # Lambda's advanced logging controls: the functions read AWS_LAMBDA_LOG_FORMAT and
  # AWS_LAMBDA_LOG_LEVEL from these and write JSON lines at that level.
  logging_config {
    log_format            = "JSON"
    application_log_level = "INFO"
    system_log_level      = "WARN"
    log_group             = aws_cloudwatch_log_group.function[each.key].name
  }

  environment {
    variables = {
      TITUS_STAGE = local.stage
    }
  }

  depends_on = [aws_iam_role_policy.function]
}

# Queue consumers: partial batch responses, so one bad message does not redeliver its batch.
# The status function also serves the agents' requests about their own records (registrations).
locals {
  event_sources = local.compute ? {
    submit        = "submit"
    status        = "status"
    registrations = "status"
  } : {}
}

resource "aws_lambda_event_source_mapping" "queue" {
  for_each = local.event_sources

  event_source_arn                   = aws_sqs_queue.this[each.key].arn
  function_name                      = aws_lambda_function.this[each.value].arn
  batch_size                         = 10
  maximum_batching_window_in_seconds = 1
  function_response_types            = ["ReportBatchItemFailures"]

  depends_on = [aws_iam_role_policy.function]
}
