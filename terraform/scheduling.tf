# The scheduler loop (Express), defined by statemachines/scheduler-loop.asl.json with
# ${SchedulerFunctionArn} substituted, and EventBridge Scheduler starting it, the scaler and the
# reconciler every minute.

resource "aws_cloudwatch_log_group" "scheduler_loop" {
  count = local.compute ? 1 : 0

  name              = "/aws/vendedlogs/states/titus-${local.stage}-scheduler-loop"
  retention_in_days = 30
}

resource "aws_iam_role" "scheduler_loop" {
  count = local.compute ? 1 : 0

  name_prefix = "titus-${local.stage}-loop-"
  description = "Titus ${local.stage} scheduler loop (Step Functions)"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "states.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_role_policy" "scheduler_loop" {
  count = local.compute ? 1 : 0

  name = "titus-scheduler-loop"
  role = aws_iam_role.scheduler_loop[0].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      # grantInvoke: the function, its versions and aliases.
      {
        Effect   = "Allow"
        Action   = ["lambda:InvokeFunction"]
        Resource = [aws_lambda_function.this["scheduler"].arn, "${aws_lambda_function.this["scheduler"].arn}:*"]
      },
      # X-Ray tracing and CloudWatch Logs delivery support no resource-level permissions.
      {
        Effect   = "Allow"
        Action   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets"]
        Resource = "*"
      },
      {
        Effect = "Allow"
        Action = [
          "logs:CreateLogDelivery",
          "logs:GetLogDelivery",
          "logs:UpdateLogDelivery",
          "logs:DeleteLogDelivery",
          "logs:ListLogDeliveries",
          "logs:PutResourcePolicy",
          "logs:DescribeResourcePolicies",
          "logs:DescribeLogGroups",
        ]
        Resource = "*"
      },
    ]
  })
}

resource "aws_sfn_state_machine" "scheduler_loop" {
  count = local.compute ? 1 : 0

  name     = "titus-${local.stage}-scheduler-loop"
  type     = "EXPRESS"
  role_arn = aws_iam_role.scheduler_loop[0].arn
  # The same substitution CDK's definitionSubstitutions makes (replace, not templatefile: the
  # definition's JSONPath uses "$").
  definition = replace(
    file("${local.root}/statemachines/scheduler-loop.asl.json"),
    "$${SchedulerFunctionArn}",
    aws_lambda_function.this["scheduler"].arn,
  )

  logging_configuration {
    log_destination        = "${aws_cloudwatch_log_group.scheduler_loop[0].arn}:*"
    level                  = "ERROR"
    include_execution_data = false
  }

  tracing_configuration {
    enabled = true
  }

  depends_on = [aws_iam_role_policy.scheduler_loop]
}

# One role per schedule target, trusted by EventBridge Scheduler for this account's default
# schedule group (what aws-scheduler-targets creates).
locals {
  schedules = local.compute ? {
    scheduler-loop = {
      description = "Starts a scheduler loop run every minute; a run that finds the lease held stops at once"
      function    = null
    }
    scaler = {
      description = "Runs the capacity scaler every minute"
      function    = "scaler"
    }
    reconciler = {
      description = "Runs the reconciler every minute"
      function    = "reconciler"
    }
  } : {}
}

resource "aws_iam_role" "schedule" {
  for_each = local.schedules

  name_prefix = "titus-${local.stage}-${each.key}-sched-"
  description = "Titus ${local.stage} schedule ${each.key}"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "scheduler.amazonaws.com" }
      Action    = "sts:AssumeRole"
      Condition = {
        StringEquals = {
          "aws:SourceAccount" = local.account
          "aws:SourceArn"     = "${local.arn_prefix}:scheduler:${local.region}:${local.account}:schedule-group/default"
        }
      }
    }]
  })
}

resource "aws_iam_role_policy" "schedule" {
  for_each = local.schedules

  name = "titus-schedule-target"
  role = aws_iam_role.schedule[each.key].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      each.value.function == null ? {
        Effect   = "Allow"
        Action   = ["states:StartExecution"]
        Resource = [aws_sfn_state_machine.scheduler_loop[0].arn]
        } : {
        Effect   = "Allow"
        Action   = ["lambda:InvokeFunction"]
        Resource = [aws_lambda_function.this[each.value.function].arn, "${aws_lambda_function.this[each.value.function].arn}:*"]
      }
    ]
  })
}

resource "aws_scheduler_schedule" "this" {
  for_each = local.schedules

  name                = "titus-${local.stage}-${each.key}"
  description         = each.value.description
  schedule_expression = "rate(1 minute)"

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = each.value.function == null ? aws_sfn_state_machine.scheduler_loop[0].arn : aws_lambda_function.this[each.value.function].arn
    role_arn = aws_iam_role.schedule[each.key].arn
    input    = jsonencode({})

    # The functions' schedules do not retry: the next minute's run starts over.
    dynamic "retry_policy" {
      for_each = each.value.function == null ? [] : [0]
      content {
        maximum_retry_attempts       = 0
        maximum_event_age_in_seconds = 86400
      }
    }
  }

  depends_on = [aws_iam_role_policy.schedule]
}
