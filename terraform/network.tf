# The agents' network is var.vpc_id (the CDK stack creates its own VPC instead). Optionally: the
# VPC's rejected traffic in flow logs (as the CDK stack logs its VPC), and endpoints so agents in
# subnets without a NAT reach the AWS APIs they use.

resource "aws_cloudwatch_log_group" "flow" {
  count = local.compute && var.enable_flow_log ? 1 : 0

  name              = "/titus/${local.stage}/vpc-flow"
  retention_in_days = 30
}

resource "aws_iam_role" "flow" {
  count = local.compute && var.enable_flow_log ? 1 : 0

  name_prefix = "titus-${local.stage}-flow-"
  description = "Titus ${local.stage} VPC flow log"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "vpc-flow-logs.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_role_policy" "flow" {
  count = local.compute && var.enable_flow_log ? 1 : 0

  name = "titus-flow-log"
  role = aws_iam_role.flow[0].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Effect   = "Allow"
        Action   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
        Resource = "${aws_cloudwatch_log_group.flow[0].arn}:*"
      },
      {
        Effect   = "Allow"
        Action   = ["iam:PassRole"]
        Resource = aws_iam_role.flow[0].arn
      },
    ]
  })
}

resource "aws_flow_log" "agents" {
  count = local.compute && var.enable_flow_log ? 1 : 0

  vpc_id          = var.vpc_id
  traffic_type    = "REJECT"
  log_destination = aws_cloudwatch_log_group.flow[0].arn
  iam_role_arn    = aws_iam_role.flow[0].arn
}

locals {
  endpoints = local.compute && var.enable_vpc_endpoints
  interface_endpoints = local.endpoints ? toset([
    "sqs", "ssm", "ecr.api", "ecr.dkr", "sts", "logs", "secretsmanager",
  ]) : toset([])
  gateway_endpoints = local.endpoints ? toset(["dynamodb", "s3"]) : toset([])
}

data "aws_route_tables" "agents" {
  count = local.endpoints ? 1 : 0

  vpc_id = var.vpc_id
}

# HTTPS from the agents only (not every address of the VPC), and no egress.
resource "aws_security_group" "endpoints" {
  count = local.endpoints ? 1 : 0

  name_prefix = "titus-${local.stage}-endpoints-"
  description = "Titus ${local.stage} VPC endpoints: HTTPS from the agents only"
  vpc_id      = var.vpc_id

  ingress {
    description     = "HTTPS from the agents"
    protocol        = "tcp"
    from_port       = 443
    to_port         = 443
    security_groups = [aws_security_group.agent[0].id]
  }
}

resource "aws_vpc_endpoint" "interface" {
  for_each = local.interface_endpoints

  vpc_id              = var.vpc_id
  service_name        = "com.amazonaws.${local.region}.${each.key}"
  vpc_endpoint_type   = "Interface"
  subnet_ids          = var.subnet_ids
  security_group_ids  = [aws_security_group.endpoints[0].id]
  private_dns_enabled = true

  tags = { Name = "titus-${local.stage}-${each.key}" }
}

# Free gateway endpoints: DynamoDB, and S3 (the agent binary, and the layers ECR serves from S3).
resource "aws_vpc_endpoint" "gateway" {
  for_each = local.gateway_endpoints

  vpc_id            = var.vpc_id
  service_name      = "com.amazonaws.${local.region}.${each.key}"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = data.aws_route_tables.agents[0].ids

  tags = { Name = "titus-${local.stage}-${each.key}" }
}
