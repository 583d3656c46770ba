output "api_url" {
  description = "The Titus API: send SigV4-signed requests (service execute-api) to api_url/api/v3/... (null without deploy_compute)."
  value       = local.compute ? aws_apigatewayv2_api.this[0].api_endpoint : null
}

output "submit_queue_url" {
  description = "Producers send job descriptors here."
  value       = aws_sqs_queue.this["submit"].url
}

output "submit_rejected_queue_url" {
  description = "Refused descriptors, with the reason, for producers to read."
  value       = aws_sqs_queue.this["submit-rejected"].url
}

output "queue_urls" {
  description = "Every queue of the stage by role (dead-letter queues as {role}-dlq)."
  value       = { for role, q in local.all_queues : role => q.url }
}

output "table_names" {
  description = "The stage's DynamoDB tables by role."
  value       = { for role, t in aws_dynamodb_table.this : role => t.name }
}

output "parameter_names" {
  description = "The stage's SSM parameters by suffix."
  value       = { for suffix, p in aws_ssm_parameter.this : suffix => p.name }
}

output "event_bus_name" {
  description = "The EventBridge bus every job and task event is published to (null without deploy_compute)."
  value       = local.compute ? aws_cloudwatch_event_bus.events[0].name : null
}

output "event_bus_arn" {
  description = "The event bus's ARN, for rules and cross-account targets (null without deploy_compute)."
  value       = local.compute ? aws_cloudwatch_event_bus.events[0].arn : null
}

output "agent_launch_template_name" {
  description = "The agents' launch template (the default pool's launch_template)."
  value       = local.compute ? aws_launch_template.agent[0].name : null
}

output "agent_role_arn" {
  description = "The agent role: task roles trust it (sts:AssumeRole) and carry the tag titus:task-role={stage}."
  value       = local.compute ? aws_iam_role.agent[0].arn : null
}

output "state_machine_arn" {
  description = "The scheduler loop."
  value       = local.compute ? aws_sfn_state_machine.scheduler_loop[0].arn : null
}
