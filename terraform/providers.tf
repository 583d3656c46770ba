# One provider for the whole stage. With `emulator_endpoint` set (the local moto emulator, for
# localstack/emulator.sh and terraform/test.sh), every service is pointed at it with the
# emulator's fixed credentials; otherwise credentials and region come from the usual places.

locals {
  emulated = var.emulator_endpoint != null
}

provider "aws" {
  region = var.region

  access_key                  = local.emulated ? "test" : null
  secret_key                  = local.emulated ? "test" : null
  skip_credentials_validation = local.emulated
  skip_requesting_account_id  = local.emulated
  skip_metadata_api_check     = local.emulated
  s3_use_path_style           = local.emulated

  dynamic "endpoints" {
    for_each = local.emulated ? [var.emulator_endpoint] : []
    content {
      dynamodb       = endpoints.value
      sqs            = endpoints.value
      ssm            = endpoints.value
      sts            = endpoints.value
      iam            = endpoints.value
      lambda         = endpoints.value
      apigatewayv2   = endpoints.value
      sfn            = endpoints.value
      scheduler      = endpoints.value
      ec2            = endpoints.value
      s3             = endpoints.value
      cloudwatch     = endpoints.value
      cloudwatchlogs = endpoints.value
      events         = endpoints.value
      sns            = endpoints.value
    }
  }

  # What CDK's Tags.of(stack) does: every resource carries the stage.
  default_tags {
    tags = {
      "titus:stage" = var.stage
    }
  }
}
