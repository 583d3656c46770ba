# The agents: a security group with no inbound rule in var.vpc_id, the task log group, the
# agents' metrics log group, the agent binary in S3, and the launch template titus-{stage}-agent (Amazon Linux 2023, IMDSv2 only with
# a hop limit of 1, instance metadata tags on, encrypted 50 GiB gp3) whose user data installs
# Docker and the agent and starts it as the systemd unit titus-agent. The scaler launches the
# instances; none run until there is work or a pool minimum.

data "aws_ssm_parameter" "agent_ami" {
  count = local.compute && var.agent_ami == null ? 1 : 0

  name = local.architectures[var.architecture].ami_parameter
}

locals {
  agent_ami = local.compute ? coalesce(var.agent_ami, try(nonsensitive(data.aws_ssm_parameter.agent_ami[0].value), null)) : null
}

resource "aws_security_group" "agent" {
  count = local.compute ? 1 : 0

  name_prefix = "titus-${local.stage}-agent-"
  description = "Titus ${local.stage} agents: no inbound, any outbound (registries, AWS APIs)"
  vpc_id      = var.vpc_id

  egress {
    description = "Allow all outbound traffic by default"
    protocol    = "-1"
    from_port   = 0
    to_port     = 0
    cidr_blocks = ["0.0.0.0/0"]
  }

  lifecycle {
    precondition {
      condition     = var.vpc_id != null
      error_message = "deploy_compute needs vpc_id (and subnet_ids for the default pool): the VPC the agents run in."
    }
  }
}

resource "aws_cloudwatch_log_group" "tasks" {
  count = local.compute ? 1 : 0

  name              = local.task_log_group_name
  retention_in_days = 30
}

# The agents' metrics: each agent writes EMF lines (namespace Titus, dimension Stage) to its own
# stream, named by its agent id, and CloudWatch turns them into metrics.
resource "aws_cloudwatch_log_group" "agents" {
  count = local.compute ? 1 : 0

  name              = local.agent_log_group_name
  retention_in_days = 30
}

# The agent binary (CDK: an S3 asset in the bootstrap bucket; here a bucket of the stage's own).
resource "aws_s3_bucket" "artefacts" {
  count = local.compute ? 1 : 0

  bucket        = "titus-${local.stage}-artefacts-${local.account}-${local.region}"
  force_destroy = true
}

resource "aws_s3_bucket_public_access_block" "artefacts" {
  count = local.compute ? 1 : 0

  bucket                  = aws_s3_bucket.artefacts[0].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "artefacts" {
  count = local.compute ? 1 : 0

  bucket = aws_s3_bucket.artefacts[0].id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_policy" "artefacts" {
  count = local.compute ? 1 : 0

  bucket = aws_s3_bucket.artefacts[0].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Deny"
      Principal = { AWS = "*" }
      Action    = "s3:*"
      Resource  = [aws_s3_bucket.artefacts[0].arn, "${aws_s3_bucket.artefacts[0].arn}/*"]
      Condition = { Bool = { "aws:SecureTransport" = "false" } }
    }]
  })

  depends_on = [aws_s3_bucket_public_access_block.artefacts]
}

resource "aws_s3_object" "agent" {
  count = local.compute ? 1 : 0

  bucket      = aws_s3_bucket.artefacts[0].id
  key         = "agent/${filesha256("${local.asset_dir}/titus-agent/bootstrap")}/titus-agent"
  source      = "${local.asset_dir}/titus-agent/bootstrap"
  source_hash = filesha256("${local.asset_dir}/titus-agent/bootstrap")

  depends_on = [aws_s3_bucket_server_side_encryption_configuration.artefacts]
}

locals {
  # What CDK's UserData.forLinux() with addS3DownloadCommand renders, and the unit it writes.
  agent_user_data = local.compute ? join("\n", [
    "#!/bin/bash",
    "set -euo pipefail",
    # Docker from the Amazon Linux 2023 repositories (served from S3 in the region, which the S3
    # gateway endpoint reaches without internet) unless the AMI already has it.
    "if command -v docker >/dev/null 2>&1; then",
    "  echo \"titus: docker is already installed; not installing it\"",
    "else",
    "  dnf install -y docker",
    "fi",
    "systemctl enable --now docker",
    # A minimal baked AMI may lack the AWS CLI the download below uses.
    "command -v aws >/dev/null 2>&1 || dnf install -y awscli-2",
    "mkdir -p $(dirname '/usr/local/bin/titus-agent')",
    "aws s3 cp 's3://${aws_s3_bucket.artefacts[0].id}/${aws_s3_object.agent[0].key}' '/usr/local/bin/titus-agent' --region ${local.region}",
    "chmod 0755 /usr/local/bin/titus-agent",
    # The pool is the instance's titus:pool tag (instance metadata tags are enabled).
    "TOKEN=$(curl -sf -X PUT http://169.254.169.254/latest/api/token -H \"X-aws-ec2-metadata-token-ttl-seconds: 300\")",
    "POOL=$(curl -sf -H \"X-aws-ec2-metadata-token: $TOKEN\" http://169.254.169.254/latest/meta-data/tags/instance/${local.tag_pool} || echo default)",
    "cat > /etc/systemd/system/titus-agent.service <<UNIT",
    "[Unit]",
    "Description=Titus agent",
    "After=docker.service network-online.target",
    "Requires=docker.service",
    "Wants=network-online.target",
    "",
    "[Service]",
    "Environment=TITUS_STAGE=${local.stage}",
    "Environment=AWS_REGION=${local.region}",
    "Environment=TITUS_LOG_FORMAT=json",
    "Environment=TITUS_AGENT_MACHINE_GROUP=$POOL",
    "ExecStart=/usr/local/bin/titus-agent run",
    # SIGTERM drains: running tasks may finish within the agent's drain timeout.
    "KillSignal=SIGTERM",
    "TimeoutStopSec=3700",
    "Restart=on-failure",
    "RestartSec=5",
    "",
    "[Install]",
    "WantedBy=multi-user.target",
    "UNIT",
    "systemctl daemon-reload",
    "systemctl enable --now titus-agent",
  ]) : null
}

resource "aws_launch_template" "agent" {
  count = local.compute ? 1 : 0

  name                   = local.launch_template
  image_id               = local.agent_ami
  vpc_security_group_ids = [aws_security_group.agent[0].id]
  user_data              = base64encode(local.agent_user_data)

  iam_instance_profile {
    arn = aws_iam_instance_profile.agent[0].arn
  }

  # Only the host reaches instance metadata: a token's response dies at the first hop, so
  # containers behind Docker's bridge get none. Tasks get their role's credentials from the agent.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "enabled"
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = 50
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  # CDK's LaunchTemplate carries the stack's tags onto the instances and volumes it launches.
  tag_specifications {
    resource_type = "instance"
    tags          = { (local.tag_stage) = local.stage }
  }
  tag_specifications {
    resource_type = "volume"
    tags          = { (local.tag_stage) = local.stage }
  }

  depends_on = [aws_iam_role_policy.agent]
}
