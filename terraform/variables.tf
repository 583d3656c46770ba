variable "stage" {
  description = "The stage: 1-16 lowercase letters, digits or hyphens. Every resource is named titus-{stage}-... or /titus/{stage}/..."
  type        = string
  default     = "prod"

  validation {
    condition     = can(regex("^[a-z0-9-]{1,16}$", var.stage))
    error_message = "The stage must be 1 to 16 lowercase letters, digits or hyphens (the Rust code's Names::new)."
  }
}

variable "region" {
  description = "The AWS region to deploy into."
  type        = string
  default     = "us-east-1"
}

variable "architecture" {
  description = "The CPU of the Lambdas, the agent AMI and the default pool's instance types: arm64 (Graviton) or x86_64."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.architecture)
    error_message = "The architecture must be arm64 or x86_64."
  }
}

variable "deploy_compute" {
  description = "Deploy the functions, API, scheduler loop, schedules, agents' launch template, IAM and alarms. false: only the data plane (tables, queues, parameters), e.g. against the emulator."
  type        = bool
  default     = true
}

variable "asset_dir" {
  description = "Where the built binaries are: <asset_dir>/<binary>.zip for each function and <asset_dir>/titus-agent/bootstrap (scripts/artefacts.sh writes both to $CARGO_TARGET_DIR/lambda). Default: ../target/lambda next to this module."
  type        = string
  default     = null
}

variable "titus_root" {
  description = "The repository root, where infra/definitions.json and statemachines/ are read from. Default: the directory above this module."
  type        = string
  default     = null
}

variable "vpc_id" {
  description = "The VPC the agents run in (its subnets must reach the AWS APIs and the registries: public subnets, a NAT, or enable_vpc_endpoints). Required when deploy_compute is true."
  type        = string
  default     = null
}

variable "subnet_ids" {
  description = "The subnets of vpc_id the default pool launches agents into (the scaler's /scaler/pools/default subnet_ids; empty: the region's default subnets)."
  type        = list(string)
  default     = []
}

variable "agent_ami" {
  description = "The agents' AMI. Default: the latest Amazon Linux 2023 of the architecture, from its public SSM parameter (what CDK's latestAmazonLinux2023 reads)."
  type        = string
  default     = null

  validation {
    condition     = var.agent_ami == null || can(regex("^ami-[0-9a-f]{8}([0-9a-f]{9})?$", var.agent_ami))
    error_message = "The agent AMI must be an AMI id such as ami-0123456789abcdef0."
  }
}

variable "enable_vpc_endpoints" {
  description = "Create interface endpoints (SQS, SSM, ECR api and dkr, STS, CloudWatch Logs, Secrets Manager; HTTPS from the agents only) in subnet_ids and gateway endpoints (DynamoDB, S3) on vpc_id's route tables, so agents in subnets without a NAT reach AWS."
  type        = bool
  default     = false
}

variable "enable_flow_log" {
  description = "Log the VPC's rejected traffic to /titus/{stage}/vpc-flow (the CDK stack does this for the VPC it creates)."
  type        = bool
  default     = true
}

variable "retain_data" {
  description = "Deletion protection on the tables (CDK's titus:retainData, default true). Set false for throwaway stages, or terraform destroy cannot delete them."
  type        = bool
  default     = true
}

variable "parameters" {
  description = "Parameter values by name suffix (\"/scaler/pools/default\"), as JSON text: a JSON object is merged over the deployed value (only the keys it names change), anything else replaces it. CDK's titus:parameters."
  type        = map(string)
  default     = {}
}

variable "alarm_email" {
  description = "An address subscribed to the alarm topic, if any."
  type        = string
  default     = null
}

variable "emulator_endpoint" {
  description = "Point every AWS service at this endpoint (the local emulator, e.g. http://127.0.0.1:4599) with test credentials. Leave unset for AWS."
  type        = string
  default     = null
}
