# The HTTP API: IAM (SigV4) authorization on its one route, proxying everything to the api
# function; access logs; the stage throttled at 200 rps with bursts of 400.

resource "aws_cloudwatch_log_group" "api_access" {
  count = local.compute ? 1 : 0

  name              = "/titus/${local.stage}/api-access"
  retention_in_days = 30
}

resource "aws_apigatewayv2_api" "this" {
  count = local.compute ? 1 : 0

  name          = "titus-${local.stage}"
  description   = "Titus ${local.stage} REST API (/api/v3), SigV4-signed callers only"
  protocol_type = "HTTP"
}

resource "aws_apigatewayv2_integration" "api" {
  count = local.compute ? 1 : 0

  api_id                 = aws_apigatewayv2_api.this[0].id
  integration_type       = "AWS_PROXY"
  integration_uri        = aws_lambda_function.this["api"].arn
  integration_method     = "POST"
  payload_format_version = "2.0"
}

# CDK's defaultIntegration + defaultAuthorizer: the $default route, AWS_IAM.
resource "aws_apigatewayv2_route" "default" {
  count = local.compute ? 1 : 0

  api_id             = aws_apigatewayv2_api.this[0].id
  route_key          = "$default"
  authorization_type = "AWS_IAM"
  target             = "integrations/${aws_apigatewayv2_integration.api[0].id}"
}

resource "aws_apigatewayv2_stage" "default" {
  count = local.compute ? 1 : 0

  api_id      = aws_apigatewayv2_api.this[0].id
  name        = "$default"
  auto_deploy = true

  default_route_settings {
    throttling_rate_limit  = 200
    throttling_burst_limit = 400
  }

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.api_access[0].arn
    # CDK's default (AccessLogFormat.clf()).
    format = "$context.identity.sourceIp $context.identity.caller $context.identity.user [$context.requestTime] \"$context.httpMethod $context.resourcePath $context.protocol\" $context.status $context.responseLength $context.requestId"
  }
}

resource "aws_lambda_permission" "api" {
  count = local.compute ? 1 : 0

  statement_id  = "AllowApiGatewayInvoke"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.this["api"].function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.this[0].execution_arn}/*/*"
}
