// Everything one Titus stage runs on in AWS: the tables, queues and parameters the Rust code
// declares (definitions.json), the functions, the API, the scheduler loop and its trigger, the
// scaler's and reconciler's schedules, the event feed (table streams, the events function, its
// bus), the agents' launch template and network, least-privilege roles for each, and alarms.

import * as fs from 'fs';
import * as path from 'path';

import * as cdk from 'aws-cdk-lib';
import * as apigw from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpIamAuthorizer } from 'aws-cdk-lib/aws-apigatewayv2-authorizers';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cwActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as events from 'aws-cdk-lib/aws-events';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { DynamoEventSource, SqsDlq, SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3assets from 'aws-cdk-lib/aws-s3-assets';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import * as schedulerTargets from 'aws-cdk-lib/aws-scheduler-targets';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as snsSubscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import * as ssm from 'aws-cdk-lib/aws-ssm';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { NagSuppressions } from 'cdk-nag';
import { Construct } from 'constructs';

import { Definitions, parameter, QueueDef, TableDef } from './definitions';

/** The Rust binaries the stack deploys: each Lambda's bin, and the agent. */
export const FUNCTION_BINARIES = {
  api: 'titus-api-lambda',
  submit: 'titus-submit-lambda',
  scheduler: 'titus-scheduler-lambda',
  status: 'titus-status-lambda',
  reconciler: 'titus-reconciler-lambda',
  scaler: 'titus-scaler-lambda',
  events: 'titus-events-lambda',
} as const;
export const AGENT_BINARY = 'titus-agent';

export type FunctionRole = keyof typeof FUNCTION_BINARIES;

/** EC2 tags the scaler puts on the instances it launches (crates/aws resources.rs `tag`). */
export const TAG_STAGE = 'titus:stage';
export const TAG_POOL = 'titus:pool';
export const TAG_MANAGED_BY = 'titus:managed-by';
export const MANAGED_BY_SCALER = 'titus-scaler';
/** The tag a task role carries, with the stage as its value, for that stage's agents to assume it. */
export const TAG_TASK_ROLE = 'titus:task-role';

/** The agents' subnet group (`AgentVpc`), public or private. */
const AGENT_SUBNETS = 'agents';

export const PLACEHOLDER_ASSET_DIR = path.join(__dirname, '..', 'assets', 'placeholder');
export const STATE_MACHINE_FILE = path.join(__dirname, '..', '..', 'statemachines', 'scheduler-loop.asl.json');

export interface TitusStackProps extends cdk.StackProps {
  stage: string;
  definitions: Definitions;
  /** Where the built binaries are: `<dir>/<binary>/bootstrap` (cargo lambda's layout). */
  assetDir: string;
  /** Synthesize with a placeholder for any binary that is not built (never deploy that). */
  placeholderAssets: boolean;
  /** Keep tables (and their data) when the stack is deleted. */
  retainData: boolean;
  /** Parameter values by name suffix (`/scaler/pools/default`), replacing the defaults. */
  parameterOverrides?: Record<string, unknown>;
  /** Where alarm notifications go, if anywhere. */
  alarmEmail?: string;
  /** The CPU of the Lambdas, the agent AMI and the default pool's instance types together. */
  architecture?: Architecture;
  /**
   * Interface endpoints in the agents' VPC for every AWS API the agents call (SQS, SSM, ECR,
   * STS, CloudWatch Logs, Secrets Manager), reachable on 443 from the agents only.
   */
  vpcEndpoints?: boolean;
  /** Agents in private subnets without public IPs or a route to the internet (needs vpcEndpoints). */
  privateSubnets?: boolean;
  /** An AMI id for the agents instead of the latest Amazon Linux 2023 of the architecture. */
  agentAmi?: string;
}

/** The interface endpoints `vpcEndpoints` adds, by construct id: every API the agents call. */
export const AGENT_INTERFACE_ENDPOINTS = {
  Sqs: ec2.InterfaceVpcEndpointAwsService.SQS,
  Ssm: ec2.InterfaceVpcEndpointAwsService.SSM,
  EcrApi: ec2.InterfaceVpcEndpointAwsService.ECR,
  EcrDocker: ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
  Sts: ec2.InterfaceVpcEndpointAwsService.STS,
  Logs: ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
  SecretsManager: ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
} as const;

/** An EC2 image id as `titus:agentAmi` takes it, or an error saying what is expected. */
export function parseAgentAmi(value: unknown): string | undefined {
  if (value === undefined || value === '') return undefined;
  if (typeof value === 'string' && /^ami-[0-9a-f]{8}([0-9a-f]{9})?$/.test(value)) return value;
  throw new Error(`titus:agentAmi is ${JSON.stringify(value)}; expected an AMI id such as ami-0123456789abcdef0`);
}

/**
 * The user data lines that make Docker run: installed from the Amazon Linux 2023 repositories
 * (served from S3 in the region, so the S3 gateway endpoint reaches them without internet)
 * unless the AMI already has it.
 */
export const DOCKER_SETUP_COMMANDS = [
  'if command -v docker >/dev/null 2>&1; then',
  '  echo "titus: docker is already installed; not installing it"',
  'else',
  '  dnf install -y docker',
  'fi',
  'systemctl enable --now docker',
];

/** `arm64` (Graviton, the default: cheaper per vCPU) or `x86_64`. */
export type Architecture = 'arm64' | 'x86_64';
export const ARCHITECTURES: readonly Architecture[] = ['arm64', 'x86_64'];

/** What an architecture means to each resource that depends on it. */
const ARCHITECTURE = {
  arm64: {
    lambda: lambda.Architecture.ARM_64,
    ami: ec2.AmazonLinuxCpuType.ARM_64,
    instanceTypes: ['m7g.large', 'm7g.xlarge', 'm7g.2xlarge'],
    cargoLambda: '--arm64',
  },
  x86_64: {
    lambda: lambda.Architecture.X86_64,
    ami: ec2.AmazonLinuxCpuType.X86_64,
    instanceTypes: ['m7i.large', 'm7i.xlarge', 'm7i.2xlarge'],
    cargoLambda: '--x86-64',
  },
} as const;

/** The architecture a context value names, or an error saying what is accepted. */
export function parseArchitecture(value: unknown): Architecture {
  if (value === undefined) return 'arm64';
  if (typeof value === 'string' && (ARCHITECTURES as readonly string[]).includes(value)) return value as Architecture;
  throw new Error(`titus:architecture is ${JSON.stringify(value)}; expected one of ${ARCHITECTURES.join(', ')} (default arm64)`);
}

interface Tables {
  jobs: dynamodb.Table;
  tasks: dynamodb.Table;
  agents: dynamodb.Table;
  heartbeats: dynamodb.Table;
  leases: dynamodb.Table;
  idempotency: dynamodb.Table;
  'rate-limits': dynamodb.Table;
  'quota-usage': dynamodb.Table;
  'placement-results': dynamodb.Table;
  events: dynamodb.Table;
}

const READ = ['dynamodb:GetItem', 'dynamodb:BatchGetItem', 'dynamodb:Query', 'dynamodb:ConditionCheckItem'];
const WRITE = ['dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem'];
const SCAN = ['dynamodb:Scan'];

export class TitusStack extends cdk.Stack {
  public readonly functions: Record<FunctionRole, lambda.Function>;
  public readonly tables: Tables;
  public readonly queues: Record<string, sqs.Queue>;
  public readonly deadLetterQueues: Record<string, sqs.Queue>;
  /** Where the events function's stream batches go when they fail for good (not a declared queue). */
  public readonly eventsDeadLetterQueue: sqs.Queue;
  public readonly eventBus: events.EventBus;
  public readonly agentRole: iam.Role;
  /** Task containers' output (Docker's awslogs driver), one stream per task: `{jobId}/{taskId}`. */
  public readonly taskLogGroup: logs.LogGroup;
  /** The agents' Embedded Metric Format lines, one stream per agent (its id). */
  public readonly agentLogGroup: logs.LogGroup;
  public readonly launchTemplate: ec2.LaunchTemplate;
  public readonly stateMachine: sfn.StateMachine;
  public readonly api: apigw.HttpApi;

  private readonly props: TitusStackProps;
  public readonly architecture: Architecture;

  constructor(scope: Construct, id: string, props: TitusStackProps) {
    super(scope, id, props);
    this.props = props;
    this.architecture = props.architecture ?? 'arm64';
    const { stage, definitions } = props;
    cdk.Tags.of(this).add(TAG_STAGE, stage);

    // Data.
    const tables = Object.fromEntries(definitions.tables.map((t) => [t.role, this.table(t)]));
    for (const role of ['jobs', 'tasks', 'agents', 'heartbeats', 'leases', 'idempotency', 'rate-limits', 'quota-usage', 'placement-results', 'events']) {
      if (!tables[role]) throw new Error(`definitions.json has no ${role} table`);
    }
    this.tables = tables as unknown as Tables;
    this.queues = {};
    this.deadLetterQueues = {};
    for (const q of definitions.queues) this.queue(q);
    for (const role of ['submit', 'submit-rejected', 'status', 'registrations']) {
      if (!this.queues[role]) throw new Error(`definitions.json has no ${role} queue`);
    }
    // The event feed's own resources, which the Rust code does not provision: the bus every
    // event is published to, and where a stream batch that keeps failing is recorded (kept 14
    // days, as the other dead letters).
    this.eventsDeadLetterQueue = new sqs.Queue(this, 'Queue-events-dlq', {
      queueName: `titus-${stage}-events-dlq`,
      retentionPeriod: cdk.Duration.days(14),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
    });
    this.eventBus = new events.EventBus(this, 'EventBus', {
      eventBusName: `titus-${stage}-events`,
      description: `Titus ${stage}: every change of a job or a task, as the events function reads it from the tables' streams`,
    });

    // The agents' network: one subnet group, public by default, isolated (no public IP, no
    // route out) with titus:privateSubnets; no NAT to pay for either way. The free gateway
    // endpoints for DynamoDB and S3 (the agent binary, ECR's layers, AL2023's dnf repositories)
    // are always there; agents take no inbound connections.
    if (props.privateSubnets && !props.vpcEndpoints) {
      throw new Error(
        'titus:privateSubnets=true needs titus:vpcEndpoints=true: agents in private subnets have no route to ' +
          'the internet and reach SQS, SSM, ECR, STS and CloudWatch Logs only through VPC endpoints',
      );
    }
    const vpc = new ec2.Vpc(this, 'AgentVpc', {
      maxAzs: 3,
      natGateways: 0,
      subnetConfiguration: [
        {
          name: AGENT_SUBNETS,
          subnetType: props.privateSubnets ? ec2.SubnetType.PRIVATE_ISOLATED : ec2.SubnetType.PUBLIC,
          cidrMask: 20,
        },
      ],
      gatewayEndpoints: {
        DynamoDb: { service: ec2.GatewayVpcEndpointAwsService.DYNAMODB },
        S3: { service: ec2.GatewayVpcEndpointAwsService.S3 },
      },
    });
    vpc.addFlowLog('FlowLog', {
      destination: ec2.FlowLogDestination.toCloudWatchLogs(
        new logs.LogGroup(this, 'FlowLogGroup', {
          logGroupName: `/titus/${stage}/vpc-flow`,
          retention: logs.RetentionDays.ONE_MONTH,
          removalPolicy: cdk.RemovalPolicy.DESTROY,
        }),
      ),
      trafficType: ec2.FlowLogTrafficType.REJECT,
    });
    const agentSecurityGroup = new ec2.SecurityGroup(this, 'AgentSecurityGroup', {
      vpc,
      description: `Titus ${stage} agents: no inbound, any outbound (registries, AWS APIs)`,
      allowAllOutbound: true,
    });
    if (props.vpcEndpoints) this.interfaceEndpoints(vpc, agentSecurityGroup);

    // Agents.
    const taskLogGroup = new logs.LogGroup(this, 'TaskLogGroup', {
      logGroupName: `/titus/${stage}/tasks`,
      retention: logs.RetentionDays.ONE_MONTH,
      removalPolicy: cdk.RemovalPolicy.DESTROY,
    });
    this.taskLogGroup = taskLogGroup;
    // The agents' metrics: each agent writes EMF lines (namespace Titus, dimension Stage) to its
    // own stream, named by its agent id, and CloudWatch turns them into metrics.
    this.agentLogGroup = new logs.LogGroup(this, 'AgentLogGroup', {
      logGroupName: `/titus/${stage}/agents`,
      retention: logs.RetentionDays.ONE_MONTH,
      removalPolicy: cdk.RemovalPolicy.DESTROY,
    });
    // A fixed name: task roles' trust policies name it (infra/README.md, "Task IAM roles").
    this.agentRole = new iam.Role(this, 'AgentRole', {
      roleName: `titus-${stage}-agent`,
      assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com'),
      description: `Titus ${stage} agent instances`,
    });
    const agentBinary = new s3assets.Asset(this, 'AgentBinary', { path: this.binary(AGENT_BINARY, true) });
    agentBinary.grantRead(this.agentRole);
    this.launchTemplate = this.agentLaunchTemplate(agentSecurityGroup, agentBinary);
    this.grantAgent();

    // Parameters: the Rust defaults, with what only the deployment knows.
    this.parameters(vpc);

    // Functions.
    this.functions = {
      api: this.lambda('api', { timeout: 29, memoryMb: 512 }),
      submit: this.lambda('submit', { timeout: 30, memoryMb: 256 }),
      scheduler: this.lambda('scheduler', { timeout: 55, memoryMb: 1024 }),
      status: this.lambda('status', { timeout: 30, memoryMb: 256 }),
      reconciler: this.lambda('reconciler', { timeout: 120, memoryMb: 512 }),
      scaler: this.lambda('scaler', { timeout: 60, memoryMb: 512 }),
      events: this.lambda('events', { timeout: 60, memoryMb: 256 }),
    };
    this.grantFunctions();

    // The API.
    const accessLogs = new logs.LogGroup(this, 'ApiAccessLogs', {
      logGroupName: `/titus/${stage}/api-access`,
      retention: logs.RetentionDays.ONE_MONTH,
      removalPolicy: cdk.RemovalPolicy.DESTROY,
    });
    this.api = new apigw.HttpApi(this, 'Api', {
      apiName: `titus-${stage}`,
      description: `Titus ${stage} REST API (/api/v3), SigV4-signed callers only`,
      defaultIntegration: new HttpLambdaIntegration('ApiIntegration', this.functions.api),
      defaultAuthorizer: new HttpIamAuthorizer(),
      createDefaultStage: false,
    });
    new apigw.HttpStage(this, 'ApiStage', {
      httpApi: this.api,
      stageName: '$default',
      autoDeploy: true,
      throttle: { rateLimit: 200, burstLimit: 400 },
      accessLogSettings: {
        destination: new apigw.LogGroupLogDestination(accessLogs),
      },
    });

    // Queue consumers: partial batch responses, so one bad message does not redeliver its batch.
    this.functions.submit.addEventSource(
      new SqsEventSource(this.queues.submit, {
        batchSize: 10,
        maxBatchingWindow: cdk.Duration.seconds(1),
        reportBatchItemFailures: true,
      }),
    );
    this.functions.status.addEventSource(
      new SqsEventSource(this.queues.status, {
        batchSize: 10,
        maxBatchingWindow: cdk.Duration.seconds(1),
        reportBatchItemFailures: true,
      }),
    );
    // Agents' requests about their own records: the status function registers them (creating
    // their queues), drains and deregisters them.
    this.functions.status.addEventSource(
      new SqsEventSource(this.queues.registrations, {
        batchSize: 10,
        maxBatchingWindow: cdk.Duration.seconds(1),
        reportBatchItemFailures: true,
      }),
    );

    // The event feed: every table that declares a stream (jobs, tasks, placement results,
    // agents) feeds the events function, which writes the events table and publishes to the bus.
    // A table's declared filters (the agents': records that can be state changes) keep the rest
    // of its records from invoking it. A failing
    // batch is halved on each function error (to isolate a bad record) and retried up to 10
    // times while its records are under a day old (the stream keeps them 24 hours); a batch that
    // fails answers its first record as the failure, so it comes again whole (the same events,
    // the same ids). No batching
    // window: a change should reach the feed at once. What still fails is recorded on the DLQ
    // (the stream, shard and sequence numbers, not the records).
    for (const def of definitions.tables.filter((t) => t.stream)) {
      this.functions.events.addEventSource(
        new DynamoEventSource(tables[def.role], {
          startingPosition: lambda.StartingPosition.TRIM_HORIZON,
          batchSize: 100,
          maxBatchingWindow: cdk.Duration.seconds(0),
          bisectBatchOnError: true,
          retryAttempts: 10,
          maxRecordAge: cdk.Duration.days(1),
          reportBatchItemFailures: true,
          onFailure: new SqsDlq(this.eventsDeadLetterQueue),
          filters: def.streamFilters?.map((pattern) => ({ pattern: JSON.stringify(pattern) })),
        }),
      );
    }

    // The scheduler loop and its trigger.
    const loopLogs = new logs.LogGroup(this, 'SchedulerLoopLogs', {
      logGroupName: `/aws/vendedlogs/states/titus-${stage}-scheduler-loop`,
      retention: logs.RetentionDays.ONE_MONTH,
      removalPolicy: cdk.RemovalPolicy.DESTROY,
    });
    this.stateMachine = new sfn.StateMachine(this, 'SchedulerLoop', {
      stateMachineName: `titus-${stage}-scheduler-loop`,
      stateMachineType: sfn.StateMachineType.EXPRESS,
      definitionBody: sfn.DefinitionBody.fromString(fs.readFileSync(STATE_MACHINE_FILE, 'utf8')),
      definitionSubstitutions: { SchedulerFunctionArn: this.functions.scheduler.functionArn },
      logs: { destination: loopLogs, level: sfn.LogLevel.ERROR, includeExecutionData: false },
      tracingEnabled: true,
      timeout: cdk.Duration.minutes(5),
    });
    this.functions.scheduler.grantInvoke(this.stateMachine);
    const every = (minutes: number) => scheduler.ScheduleExpression.rate(cdk.Duration.minutes(minutes));
    new scheduler.Schedule(this, 'SchedulerLoopSchedule', {
      scheduleName: `titus-${stage}-scheduler-loop`,
      description: 'Starts a scheduler loop run every minute; a run that finds the lease held stops at once',
      schedule: every(1),
      target: new schedulerTargets.StepFunctionsStartExecution(this.stateMachine, {
        input: scheduler.ScheduleTargetInput.fromObject({}),
      }),
    });
    new scheduler.Schedule(this, 'ScalerSchedule', {
      scheduleName: `titus-${stage}-scaler`,
      description: 'Runs the capacity scaler every minute',
      schedule: every(1),
      target: new schedulerTargets.LambdaInvoke(this.functions.scaler, {
        input: scheduler.ScheduleTargetInput.fromObject({}),
        retryAttempts: 0,
      }),
    });
    new scheduler.Schedule(this, 'ReconcilerSchedule', {
      scheduleName: `titus-${stage}-reconciler`,
      description: 'Runs the reconciler every minute',
      schedule: every(1),
      target: new schedulerTargets.LambdaInvoke(this.functions.reconciler, {
        input: scheduler.ScheduleTargetInput.fromObject({}),
        retryAttempts: 0,
      }),
    });

    this.alarms();
    this.suppressions();

    new cdk.CfnOutput(this, 'ApiUrl', { value: this.api.apiEndpoint, description: 'The Titus API (SigV4, /api/v3)' });
    new cdk.CfnOutput(this, 'SubmitQueueUrl', { value: this.queues.submit.queueUrl });
    new cdk.CfnOutput(this, 'SubmitRejectedQueueUrl', { value: this.queues['submit-rejected'].queueUrl });
    new cdk.CfnOutput(this, 'AgentLaunchTemplateName', { value: `titus-${stage}-agent` });
    new cdk.CfnOutput(this, 'EventBusName', {
      value: this.eventBus.eventBusName,
      description: 'The EventBridge bus every job and task event is published to',
    });
    new cdk.CfnOutput(this, 'EventBusArn', { value: this.eventBus.eventBusArn });
    new cdk.CfnOutput(this, 'AgentRoleArn', {
      value: this.agentRole.roleArn,
      description: `The agent role: task roles trust it (sts:AssumeRole) and carry the tag ${TAG_TASK_ROLE}=${stage}`,
    });
  }

  private table(def: TableDef): dynamodb.Table {
    const key = (name: string) => ({ name, type: dynamodb.AttributeType.STRING });
    const table = new dynamodb.Table(this, `Table-${def.role}`, {
      tableName: def.name,
      partitionKey: key(def.partitionKey),
      sortKey: def.sortKey ? key(def.sortKey) : undefined,
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      timeToLiveAttribute: def.ttlAttribute,
      stream: def.stream ? dynamodb.StreamViewType.NEW_AND_OLD_IMAGES : undefined,
      deletionProtection: this.props.retainData,
      removalPolicy: this.props.retainData ? cdk.RemovalPolicy.RETAIN : cdk.RemovalPolicy.DESTROY,
    });
    for (const index of def.globalSecondaryIndexes) {
      table.addGlobalSecondaryIndex({
        indexName: index.name,
        partitionKey: key(index.partitionKey),
        sortKey: index.sortKey ? key(index.sortKey) : undefined,
        projectionType: dynamodb.ProjectionType.ALL,
      });
    }
    return table;
  }

  private queue(def: QueueDef): sqs.Queue {
    let deadLetterQueue: sqs.DeadLetterQueue | undefined;
    if (def.deadLetter) {
      const dlq = new sqs.Queue(this, `Queue-${def.role}-dlq`, {
        queueName: def.deadLetter.name,
        // Dead letters are kept as long as SQS allows, for an operator to look at.
        retentionPeriod: cdk.Duration.days(14),
        encryption: sqs.QueueEncryption.SQS_MANAGED,
        enforceSSL: true,
      });
      this.deadLetterQueues[def.role] = dlq;
      deadLetterQueue = { queue: dlq, maxReceiveCount: def.deadLetter.maxReceiveCount };
    }
    const queue = new sqs.Queue(this, `Queue-${def.role}`, {
      queueName: def.name,
      visibilityTimeout: cdk.Duration.seconds(def.visibilityTimeoutSecs),
      retentionPeriod: cdk.Duration.seconds(def.messageRetentionSecs),
      deadLetterQueue,
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
    });
    this.queues[def.role] = queue;
    return queue;
  }

  /** The directory (or, for the agent, the file) holding a built binary, or the placeholder. */
  private binary(name: string, file = false): string {
    const dir = path.join(this.props.assetDir, name);
    const bootstrap = path.join(dir, 'bootstrap');
    if (fs.existsSync(bootstrap)) return file ? bootstrap : dir;
    if (!this.props.placeholderAssets) {
      throw new Error(
        `${bootstrap} does not exist. Build the binaries first (infra/README.md: ` +
          `\`cargo lambda build --release ${ARCHITECTURE[this.architecture].cargoLambda} ...\`, ` +
          `for titus:architecture=${this.architecture}), point -c titus:assetDir=DIR at them, or ` +
          'synthesize without them with -c titus:placeholderAssets=true (never deploy that).',
      );
    }
    cdk.Annotations.of(this).addWarningV2('titus:placeholder-asset', `${name} is a placeholder: ${bootstrap} was not built`);
    return file ? path.join(PLACEHOLDER_ASSET_DIR, 'bootstrap') : PLACEHOLDER_ASSET_DIR;
  }

  private lambda(role: FunctionRole, options: { timeout: number; memoryMb: number }): lambda.Function {
    const stage = this.props.stage;
    const name = `titus-${stage}-${role}`;
    const logGroup = new logs.LogGroup(this, `Logs-${role}`, {
      logGroupName: `/aws/lambda/${name}`,
      retention: logs.RetentionDays.ONE_MONTH,
      removalPolicy: cdk.RemovalPolicy.DESTROY,
    });
    // An explicit role, so that the function gets only its log group rather than the managed
    // basic-execution policy's logs:* on every group.
    const executionRole = new iam.Role(this, `Role-${role}`, {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: `Titus ${stage} ${role} function`,
    });
    executionRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        resources: [logGroup.logGroupArn],
      }),
    );
    return new lambda.Function(this, `Function-${role}`, {
      functionName: name,
      description: `Titus ${role} (${FUNCTION_BINARIES[role]})`,
      runtime: lambda.Runtime.PROVIDED_AL2023,
      architecture: ARCHITECTURE[this.architecture].lambda,
      handler: 'bootstrap',
      code: lambda.Code.fromAsset(this.binary(FUNCTION_BINARIES[role])),
      memorySize: options.memoryMb,
      timeout: cdk.Duration.seconds(options.timeout),
      role: executionRole,
      logGroup,
      // Lambda's advanced logging controls: the functions read AWS_LAMBDA_LOG_FORMAT and
      // AWS_LAMBDA_LOG_LEVEL from these and write JSON lines at that level.
      // X-Ray: a trace per invocation, with the AWS calls it makes.
      tracing: lambda.Tracing.ACTIVE,
      loggingFormat: lambda.LoggingFormat.JSON,
      applicationLogLevelV2: lambda.ApplicationLogLevel.INFO,
      systemLogLevelV2: lambda.SystemLogLevel.WARN,
      environment: {
        TITUS_STAGE: stage,
      },
    });
  }

  private parameters(vpc: ec2.Vpc): void {
    const defs = this.props.definitions;
    const stage = this.props.stage;
    const values = new Map<string, string>(defs.parameters.map((p) => [p.name, p.defaultValue]));
    // JSON object values as objects, so that merges keep tokens (subnet ids) intact.
    const objects = new Map<string, Record<string, unknown>>();
    const merge = (suffix: string, extra: Record<string, unknown>) => {
      const p = parameter(defs, suffix);
      const current = objects.get(p.name) ?? JSON.parse(values.get(p.name) ?? '{}');
      const merged = { ...current, ...extra };
      objects.set(p.name, merged);
      values.set(p.name, this.toJsonString(merged));
    };
    // In AWS callers are named by API Gateway's IAM authorization: no bearer tokens.
    values.set(parameter(defs, '/api/identities').name, '{}');
    // A status or an agent request is believed only from the agent instance role's session of
    // the agent it names: `{role id}:{instance id}`, as SQS reports the sender.
    merge('/control/rules', { agent_role_id: this.agentRole.roleId });
    // Task logs go to CloudWatch Logs, and the agents' metrics (EMF lines) to their own group.
    merge('/agent/config', {
      log_driver: 'awslogs',
      awslogs_group: this.taskLogGroup.logGroupName,
      metrics_log_group: this.agentLogGroup.logGroupName,
    });
    // The default pool launches into this stack's subnets from its launch template, on
    // instance types of the stack's architecture (the AMI's).
    merge('/scaler/pools/default', {
      subnet_ids: vpc.selectSubnets({ subnetGroupName: AGENT_SUBNETS }).subnetIds,
      launch_template: `titus-${stage}-agent`,
      instance_types: [...ARCHITECTURE[this.architecture].instanceTypes],
    });
    // Overrides: a JSON object is merged over the value (only the keys it names change), anything
    // else replaces it.
    for (const [suffix, value] of Object.entries(this.props.parameterOverrides ?? {})) {
      const name = `/titus/${stage}${suffix}`;
      if (!values.has(name)) {
        throw new Error(`parameter override ${name} names no parameter of definitions.json`);
      }
      if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
        merge(suffix, value as Record<string, unknown>);
      } else {
        values.set(name, typeof value === 'string' ? value : this.toJsonString(value));
      }
    }
    for (const def of defs.parameters) {
      new ssm.StringParameter(this, `Parameter${def.name.replace(`/titus/${stage}`, '').replace(/[^A-Za-z0-9]/g, '-')}`, {
        parameterName: def.name,
        description: def.description.slice(0, 1024),
        stringValue: values.get(def.name) ?? def.defaultValue,
        tier: ssm.ParameterTier.STANDARD,
      });
    }
  }

  private agentLaunchTemplate(securityGroup: ec2.SecurityGroup, agentBinary: s3assets.Asset): ec2.LaunchTemplate {
    const stage = this.props.stage;
    // Nothing here needs the internet: dnf's repositories and the agent binary are in S3 in the
    // region (the S3 gateway endpoint), instance metadata is on the host.
    const userData = ec2.UserData.forLinux();
    userData.addCommands('set -euo pipefail', ...DOCKER_SETUP_COMMANDS);
    // A minimal baked AMI may lack the AWS CLI the download below uses.
    userData.addCommands('command -v aws >/dev/null 2>&1 || dnf install -y awscli-2');
    userData.addS3DownloadCommand({
      bucket: agentBinary.bucket,
      bucketKey: agentBinary.s3ObjectKey,
      localFile: '/usr/local/bin/titus-agent',
      // The bucket's regional endpoint, which the S3 gateway endpoint serves.
      region: this.region,
    });
    userData.addCommands(
      'chmod 0755 /usr/local/bin/titus-agent',
      // The pool is the instance's titus:pool tag (instance metadata tags are enabled).
      'TOKEN=$(curl -sf -X PUT http://169.254.169.254/latest/api/token -H "X-aws-ec2-metadata-token-ttl-seconds: 300")',
      `POOL=$(curl -sf -H "X-aws-ec2-metadata-token: $TOKEN" http://169.254.169.254/latest/meta-data/tags/instance/${TAG_POOL} || echo default)`,
      'cat > /etc/systemd/system/titus-agent.service <<UNIT',
      '[Unit]',
      'Description=Titus agent',
      'After=docker.service network-online.target',
      'Requires=docker.service',
      'Wants=network-online.target',
      '',
      '[Service]',
      `Environment=TITUS_STAGE=${stage}`,
      `Environment=AWS_REGION=${this.region}`,
      'Environment=TITUS_LOG_FORMAT=json',
      'Environment=TITUS_AGENT_MACHINE_GROUP=$POOL',
      'ExecStart=/usr/local/bin/titus-agent run',
      // SIGTERM drains: running tasks may finish within the agent's drain timeout.
      'KillSignal=SIGTERM',
      'TimeoutStopSec=3700',
      'Restart=on-failure',
      'RestartSec=5',
      '',
      '[Install]',
      'WantedBy=multi-user.target',
      'UNIT',
      'systemctl daemon-reload',
      'systemctl enable --now titus-agent',
    );
    return new ec2.LaunchTemplate(this, 'AgentLaunchTemplate', {
      launchTemplateName: `titus-${stage}-agent`,
      machineImage: this.agentMachineImage(),
      role: this.agentRole,
      securityGroup,
      userData,
      requireImdsv2: true,
      // Only the host reaches instance metadata: the agent runs on it (a systemd unit), and a
      // token's response dies at the first hop, so containers behind Docker's bridge get none.
      // Tasks get their role's credentials from the agent, never the instance role's.
      httpPutResponseHopLimit: 1,
      instanceMetadataTags: true,
      blockDevices: [
        {
          deviceName: '/dev/xvda',
          volume: ec2.BlockDeviceVolume.ebs(50, {
            encrypted: true,
            volumeType: ec2.EbsDeviceVolumeType.GP3,
            deleteOnTermination: true,
          }),
        },
      ],
    });
  }

  /** `titus:agentAmi` when given, else the latest AL2023 of the architecture (an SSM parameter). */
  private agentMachineImage(): ec2.IMachineImage {
    const ami = this.props.agentAmi;
    if (!ami) return ec2.MachineImage.latestAmazonLinux2023({ cpuType: ARCHITECTURE[this.architecture].ami });
    return {
      getImage: () => ({ imageId: ami, osType: ec2.OperatingSystemType.LINUX, userData: ec2.UserData.forLinux() }),
    };
  }

  /**
   * Interface endpoints, with private DNS, in the agents' subnets for every API the agents call
   * besides DynamoDB and S3 (gateway endpoints): their security group admits HTTPS from the
   * agents only.
   */
  private interfaceEndpoints(vpc: ec2.Vpc, agents: ec2.SecurityGroup): void {
    const stage = this.props.stage;
    const securityGroup = new ec2.SecurityGroup(this, 'EndpointSecurityGroup', {
      vpc,
      description: `Titus ${stage} VPC endpoints: HTTPS from the agents only`,
      allowAllOutbound: false,
    });
    securityGroup.addIngressRule(agents, ec2.Port.tcp(443), 'HTTPS from the agents');
    for (const [id, service] of Object.entries(AGENT_INTERFACE_ENDPOINTS)) {
      vpc.addInterfaceEndpoint(id, {
        service,
        privateDnsEnabled: true,
        subnets: { subnetGroupName: AGENT_SUBNETS },
        securityGroups: [securityGroup],
        // Only the rule above: not every address of the VPC.
        open: false,
      });
    }
  }

  private tableArns(...tables: dynamodb.Table[]): string[] {
    return tables.flatMap((t) => [t.tableArn, `${t.tableArn}/index/*`]);
  }

  private allow(role: iam.IRole, actions: string[], resources: string[], conditions?: Record<string, unknown>): void {
    role.addToPrincipalPolicy(new iam.PolicyStatement({ actions, resources, conditions }));
  }

  private parameterArn(name: string): string {
    return this.formatArn({ service: 'ssm', resource: 'parameter', resourceName: name.replace(/^\//, '') });
  }

  /** Every stream of the task log group: `arn:…:log-group:/titus/{stage}/tasks:log-stream:*`. */
  private taskLogStreamsArn(): string {
    return this.formatArn({
      service: 'logs',
      resource: 'log-group',
      resourceName: `${this.taskLogGroup.logGroupName}:log-stream:*`,
      arnFormat: cdk.ArnFormat.COLON_RESOURCE_NAME,
    });
  }

  private agentQueuesArn(): string {
    return this.formatArn({ service: 'sqs', resource: `titus-${this.props.stage}-agent-*` });
  }

  private grantAgent(): void {
    const role = this.agentRole;
    const taskLogGroup = this.taskLogGroup;
    const stage = this.props.stage;
    // Only its own queue, named after its instance (the control plane creates it at
    // registration), and that queue's DLQ, where it keeps the commands it cannot apply. It
    // cannot create queues, change their attributes or send to another agent's queue.
    const ownQueue = this.formatArn({ service: 'sqs', resource: `titus-${stage}-agent-\${ec2:InstanceID}` });
    this.allow(
      role,
      ['sqs:GetQueueUrl', 'sqs:GetQueueAttributes', 'sqs:ReceiveMessage', 'sqs:DeleteMessage', 'sqs:ChangeMessageVisibility'],
      [ownQueue],
    );
    this.allow(role, ['sqs:GetQueueUrl', 'sqs:SendMessage'], [`${ownQueue}-dlq`]);
    // Its statuses, and its requests about its own record (register, drain, deregister).
    this.allow(role, ['sqs:GetQueueUrl', 'sqs:SendMessage'], [this.queues.status.queueArn, this.queues.registrations.queueArn]);
    // It reads its own record and writes only its own heartbeat item, keyed by its role
    // session (`{role id}:{instance id}`): DynamoDB's leading-key condition. It writes no
    // record of agents, jobs or tasks.
    this.allow(role, ['dynamodb:GetItem'], [this.tables.agents.tableArn], {
      'ForAllValues:StringEquals': { 'dynamodb:LeadingKeys': ['${ec2:InstanceID}'] },
    });
    this.allow(role, ['dynamodb:GetItem', 'dynamodb:PutItem'], [this.tables.heartbeats.tableArn], {
      'ForAllValues:StringEquals': { 'dynamodb:LeadingKeys': ['${aws:userid}'] },
    });
    // Before it starts or re-adopts a task it reads the task's record: where it is placed.
    this.allow(role, ['dynamodb:GetItem'], [this.tables.tasks.tableArn]);
    this.allow(role, ['ssm:GetParametersByPath', 'ssm:GetParameters', 'ssm:GetParameter'], [
      this.parameterArn(`/titus/${stage}/agent`),
      this.parameterArn(`/titus/${stage}/agent/*`),
    ]);
    // Images from the account's ECR repositories.
    this.allow(role, ['ecr:GetAuthorizationToken'], ['*']);
    this.allow(role, ['ecr:BatchGetImage', 'ecr:GetDownloadUrlForLayer', 'ecr:BatchCheckLayerAvailability'], [
      this.formatArn({ service: 'ecr', resource: 'repository', resourceName: '*' }),
    ]);
    // Task logs (Docker's awslogs driver).
    this.allow(role, ['logs:CreateLogStream', 'logs:PutLogEvents', 'logs:DescribeLogStreams'], [
      taskLogGroup.logGroupArn,
      `${taskLogGroup.logGroupArn}:log-stream:*`,
    ]);
    // Its metrics: EMF lines to its own stream (named by its agent id) of the agents' group.
    this.allow(role, ['logs:CreateLogStream', 'logs:PutLogEvents'], [
      this.agentLogGroup.logGroupArn,
      `${this.agentLogGroup.logGroupArn}:log-stream:*`,
    ]);
    // Task credentials: it assumes the role a job names (session titus-{task id}) and serves the
    // credentials to that task's container only. Only roles of the account that the user tagged
    // titus:task-role={stage}; the role's own trust policy must also name this role.
    this.allow(role, ['sts:AssumeRole'], [
      this.formatArn({ service: 'iam', region: '', resource: 'role', resourceName: '*' }),
    ], { StringEquals: { [`aws:ResourceTag/${TAG_TASK_ROLE}`]: stage } });
    // Secrets of tasks without a role: only the stage's shared space (a task with a role reads
    // its secrets with its role's credentials instead). SecureStrings under the AWS managed
    // aws/ssm key need no KMS grant; a customer key's policy must allow this role.
    this.allow(role, ['ssm:GetParameter'], [this.parameterArn(`/titus/${stage}/secrets/*`)]);
    this.allow(role, ['secretsmanager:GetSecretValue'], [
      this.formatArn({ service: 'secretsmanager', resource: 'secret', resourceName: `titus/${stage}/secrets/*`, arnFormat: cdk.ArnFormat.COLON_RESOURCE_NAME }),
    ]);
  }

  private grantFunctions(): void {
    const f = this.functions;
    const t = this.tables;
    const q = this.queues;
    const stage = this.props.stage;
    const defs = this.props.definitions;
    const param = (suffix: string) => this.parameterArn(parameter(defs, suffix).name);
    const agentQueues = this.agentQueuesArn();

    // Every function builds the control plane from the same six parameters (titus-app's
    // settings::load): the job limits and policies, the rules, the scheduler's tunables.
    const controlPlaneSettings = [
      param('/limits/job'),
      param('/policy/jobs'),
      param('/policy/teams'),
      param('/policy/quotas'),
      param('/control/rules'),
      param('/scheduler/config'),
    ];

    // api: jobs and tasks, reading agents, kill commands to agents' queues.
    this.allow(f.api.role!, [...READ, ...WRITE], this.tableArns(t.jobs, t.tasks, t.idempotency));
    // Per-caller rate limits: one conditional counter update per request.
    this.allow(f.api.role!, ['dynamodb:UpdateItem'], [t['rate-limits'].tableArn]);
    // Quota usage: changed in the transaction of each job write that changes what a job holds,
    // read back to name the quota of a refusal, and listed for `titus quota`.
    this.allow(f.api.role!, ['dynamodb:UpdateItem', 'dynamodb:GetItem', ...SCAN], [t['quota-usage'].tableArn]);
    this.allow(f.api.role!, [...READ, ...SCAN], this.tableArns(t.agents, t.heartbeats));
    // Why a task waits: the scheduler's placement results, read one job at a time.
    this.allow(f.api.role!, ['dynamodb:GetItem'], [t['placement-results'].tableArn]);
    // The event feed: a job's events, or every job's of a minute, in order.
    this.allow(f.api.role!, ['dynamodb:Query'], [t.events.tableArn]);
    this.allow(f.api.role!, ['sqs:SendMessage'], [agentQueues]);
    // A task's output (GET /api/v3/tasks/{id}/logs): its stream {jobId}/{taskId} of the task log
    // group, read only. The group's ARN (it ends in :*) for DescribeLogStreams, its streams'
    // for GetLogEvents.
    this.allow(f.api.role!, ['logs:GetLogEvents', 'logs:DescribeLogStreams'], [
      this.taskLogGroup.logGroupArn,
      this.taskLogStreamsArn(),
    ]);
    this.allow(f.api.role!, ['ssm:GetParameters', 'ssm:GetParameter'], [
      ...controlPlaneSettings,
      param('/api/identities'),
      param('/api/admins'),
      param('/api/rate-limits'),
    ]);

    // submit: creates jobs; refused descriptors go to the rejected queue.
    this.allow(f.submit.role!, [...READ, ...WRITE], this.tableArns(t.jobs, t.tasks, t.idempotency));
    this.allow(f.submit.role!, ['dynamodb:UpdateItem', 'dynamodb:GetItem'], [t['quota-usage'].tableArn]);
    this.allow(f.submit.role!, ['sqs:GetQueueUrl', 'sqs:SendMessage'], [q['submit-rejected'].queueArn]);
    this.allow(f.submit.role!, ['ssm:GetParameters', 'ssm:GetParameter'], controlPlaneSettings);

    // scheduler: the lease, new jobs' tasks (clearing the job's awaiting mark), placements
    // (tasks and agents' allocations), dispatch to agents.
    this.allow(f.scheduler.role!, [...READ, 'dynamodb:UpdateItem'], this.tableArns(t.jobs));
    this.allow(f.scheduler.role!, [...READ, ...WRITE], this.tableArns(t.tasks, t.leases));
    this.allow(f.scheduler.role!, [...READ, ...SCAN, 'dynamodb:UpdateItem'], this.tableArns(t.agents));
    this.allow(f.scheduler.role!, [...READ, ...SCAN], this.tableArns(t.heartbeats));
    this.allow(f.scheduler.role!, ['sqs:SendMessage'], [agentQueues]);
    // Placement results: written (put and removed) in batches when a job's answer changes.
    this.allow(f.scheduler.role!, ['dynamodb:BatchWriteItem', 'dynamodb:PutItem', 'dynamodb:DeleteItem'], [
      t['placement-results'].tableArn,
    ]);
    this.allow(f.scheduler.role!, ['ssm:GetParameters', 'ssm:GetParameter'], controlPlaneSettings);

    // status and reconciler: task states, releases, replacements, kills, lost agents.
    for (const fn of [f.status, f.reconciler]) {
      this.allow(fn.role!, [...READ, ...WRITE], this.tableArns(t.jobs, t.tasks, t.leases));
      // A job's finish releases what it held, in the same transaction.
      this.allow(fn.role!, ['dynamodb:UpdateItem', 'dynamodb:GetItem'], [t['quota-usage'].tableArn]);
      this.allow(fn.role!, [...READ, ...SCAN, ...WRITE], this.tableArns(t.agents, t.heartbeats));
      this.allow(fn.role!, ['sqs:SendMessage', 'sqs:GetQueueUrl'], [agentQueues]);
      this.allow(fn.role!, ['ssm:GetParameters', 'ssm:GetParameter'], controlPlaneSettings);
    }
    // status: registers agents, creating each one's queue and its DLQ (only the control plane
    // creates queues or sets their attributes).
    this.allow(f.status.role!, ['sqs:CreateQueue', 'sqs:GetQueueAttributes', 'sqs:SetQueueAttributes'], [agentQueues]);
    // status: a message that can never apply is kept on the status DLQ with its reason.
    this.allow(f.status.role!, ['sqs:GetQueueUrl', 'sqs:SendMessage'], [this.deadLetterQueues.status.queueArn]);

    // events: each change becomes an event of its job's feed and of the feed of every job, and
    // is published to the bus; a task's event carries its job's owner, read from the job. Its
    // event sources grant the streams' reads, and their on-failure destination the DLQ's send.
    this.allow(f.events.role!, ['dynamodb:BatchWriteItem', 'dynamodb:PutItem'], [t.events.tableArn]);
    this.allow(f.events.role!, ['dynamodb:GetItem'], [t.jobs.tableArn]);
    // Its control plane loads the stage's settings at start, as every function's does.
    this.allow(f.events.role!, ['ssm:GetParameters', 'ssm:GetParameter'], controlPlaneSettings);
    this.eventBus.grantPutEventsTo(f.events.role!);

    // scaler: reads demand, drains and deregisters agents, its lease and state, EC2.
    const scaler = f.scaler.role!;
    this.allow(scaler, READ, this.tableArns(t.jobs, t.tasks));
    this.allow(scaler, [...READ, ...SCAN, 'dynamodb:UpdateItem', 'dynamodb:DeleteItem'], this.tableArns(t.agents, t.heartbeats));
    this.allow(scaler, ['dynamodb:GetItem', 'dynamodb:UpdateItem'], [t.leases.tableArn]);
    this.allow(scaler, ['ssm:GetParameters', 'ssm:GetParameter'], controlPlaneSettings);
    this.allow(scaler, ['ssm:GetParametersByPath'], [this.parameterArn(`/titus/${stage}/scaler`)]);
    this.allow(scaler, ['ssm:GetParametersByPath', 'ssm:GetParameters', 'ssm:GetParameter'], [
      this.parameterArn(`/titus/${stage}/scaler/*`),
    ]);
    this.allow(scaler, [
      'ec2:DescribeInstances',
      'ec2:DescribeInstanceTypes',
      'ec2:DescribeSubnets',
      'ec2:DescribeLaunchTemplates',
      'ec2:DescribeLaunchTemplateVersions',
      'ec2:DescribeImages',
    ], ['*']);
    const ec2Arn = (resource: string) => this.formatArn({ service: 'ec2', resource, resourceName: '*' });
    // Launches: the instances must carry the stage's tag; the rest of what a launch touches
    // is named by the launch template and the pool's subnets.
    this.allow(scaler, ['ec2:CreateFleet', 'ec2:RunInstances'], [ec2Arn('instance')], {
      StringEquals: { [`aws:RequestTag/${TAG_STAGE}`]: stage, [`aws:RequestTag/${TAG_MANAGED_BY}`]: MANAGED_BY_SCALER },
    });
    this.allow(scaler, ['ec2:CreateFleet', 'ec2:RunInstances'], [
      this.formatArn({ service: 'ec2', resource: 'launch-template', resourceName: this.launchTemplate.launchTemplateId! }),
      ec2Arn('fleet'),
      ec2Arn('volume'),
      ec2Arn('network-interface'),
      ec2Arn('subnet'),
      ec2Arn('security-group'),
      ec2Arn('spot-instances-request'),
      this.formatArn({ service: 'ec2', account: '', resource: 'image', resourceName: '*' }),
    ]);
    this.allow(scaler, ['ec2:CreateTags'], [ec2Arn('instance'), ec2Arn('fleet'), ec2Arn('volume'), ec2Arn('spot-instances-request')], {
      StringEquals: { 'ec2:CreateAction': ['CreateFleet', 'RunInstances'] },
    });
    // Terminations: only the stage's instances that the scaler launched.
    this.allow(scaler, ['ec2:TerminateInstances'], [ec2Arn('instance')], {
      StringEquals: { [`aws:ResourceTag/${TAG_STAGE}`]: stage, [`aws:ResourceTag/${TAG_MANAGED_BY}`]: MANAGED_BY_SCALER },
    });
    this.allow(scaler, ['iam:PassRole'], [this.agentRole.roleArn], {
      StringEquals: { 'iam:PassedToService': 'ec2.amazonaws.com' },
    });
    this.allow(scaler, ['iam:CreateServiceLinkedRole'], [
      this.formatArn({ service: 'iam', region: '', resource: 'role', resourceName: 'aws-service-role/spot.amazonaws.com/*' }),
    ], { StringEquals: { 'iam:AWSServiceName': 'spot.amazonaws.com' } });
  }

  private alarms(): void {
    const stage = this.props.stage;
    const topic = new sns.Topic(this, 'AlarmTopic', {
      topicName: `titus-${stage}-alarms`,
      displayName: `Titus ${stage} alarms`,
      enforceSSL: true,
    });
    if (this.props.alarmEmail) {
      topic.addSubscription(new snsSubscriptions.EmailSubscription(this.props.alarmEmail));
    }
    const action = new cwActions.SnsAction(topic);
    for (const [role, dlq] of Object.entries(this.deadLetterQueues)) {
      const alarm = new cloudwatch.Alarm(this, `DeadLetters-${role}`, {
        alarmName: `titus-${stage}-${role}-dead-letters`,
        alarmDescription: `Messages of the ${role} queue could not be processed and are kept in ${dlq.queueName}; read their reason, fix, then redrive`,
        metric: dlq.metricApproximateNumberOfMessagesVisible({ period: cdk.Duration.minutes(5), statistic: 'Maximum' }),
        threshold: 0,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluationPeriods: 1,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
      alarm.addAlarmAction(action);
    }
    new cloudwatch.Alarm(this, 'DeadLetters-events', {
      alarmName: `titus-${stage}-events-dead-letters`,
      alarmDescription: `The events function gave up on stream records (10 retries, or a day old): their events are missing from the feed. ${this.eventsDeadLetterQueue.queueName} names their stream, shard and sequence numbers; read them from the stream within its 24 hours`,
      metric: this.eventsDeadLetterQueue.metricApproximateNumberOfMessagesVisible({ period: cdk.Duration.minutes(5), statistic: 'Maximum' }),
      threshold: 0,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    }).addAlarmAction(action);
    for (const [role, fn] of Object.entries(this.functions)) {
      const alarm = new cloudwatch.Alarm(this, `Errors-${role}`, {
        alarmName: `titus-${stage}-${role}-errors`,
        alarmDescription: `The ${role} function failed; its log group /aws/lambda/titus-${stage}-${role} says why`,
        metric: fn.metricErrors({ period: cdk.Duration.minutes(5), statistic: 'Sum' }),
        threshold: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        evaluationPeriods: 1,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
      alarm.addAlarmAction(action);
    }

    // The event feed lags: the oldest record the events function read from a stream was more than
    // a minute old, for 5 minutes (the function failing or too slow; records expire after 24 hours).
    new cloudwatch.Alarm(this, 'EventsIteratorAge', {
      alarmName: `titus-${stage}-events-iterator-age`,
      alarmDescription: `The event feed is more than a minute behind the tables' streams for 5 minutes; /aws/lambda/titus-${stage}-events says why (stream records expire after 24 hours)`,
      metric: new cloudwatch.Metric({
        namespace: 'AWS/Lambda',
        metricName: 'IteratorAge',
        dimensionsMap: { FunctionName: this.functions.events.functionName },
        statistic: 'Maximum',
        period: cdk.Duration.minutes(1),
      }),
      threshold: 60_000,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 5,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    }).addAlarmAction(action);

    // The control plane's own metrics, from the EMF lines the functions print after each
    // invocation and the agents write to their log group (namespace Titus, dimension Stage).
    const metric = (metricName: string, statistic: string, minutes = 1) =>
      new cloudwatch.Metric({
        namespace: 'Titus',
        metricName,
        dimensionsMap: { Stage: stage },
        statistic,
        period: cdk.Duration.minutes(minutes),
      });
    const leaseAlarm = new cloudwatch.Alarm(this, 'SchedulerLeaseNotHeld', {
      alarmName: `titus-${stage}-scheduler-lease-not-held`,
      alarmDescription: 'No scheduler tick held the lease for 5 minutes: nothing is being placed. Check the scheduler loop state machine and the scheduler function log',
      metric: metric('LeaseHeld', 'Maximum'),
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
      evaluationPeriods: 5,
      // No tick at all is the loop not running: as bad as a tick without the lease.
      treatMissingData: cloudwatch.TreatMissingData.BREACHING,
    });
    leaseAlarm.addAlarmAction(action);
    const pendingAlarm = new cloudwatch.Alarm(this, 'OldestPendingTooOld', {
      alarmName: `titus-${stage}-oldest-pending-too-old`,
      alarmDescription: 'A pending task has waited more than 15 minutes; `titus task get` or GET /api/v3/scheduler/results/{id} says why',
      metric: metric('OldestPendingAgeMs', 'Maximum', 5),
      threshold: 15 * 60 * 1000,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 3,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    pendingAlarm.addAlarmAction(action);
    // One failed tick can be a blip; 3 or more in 5 minutes is the loop failing.
    const tickErrorsAlarm = new cloudwatch.Alarm(this, 'TickErrors', {
      alarmName: `titus-${stage}-tick-errors`,
      alarmDescription: `Scheduler ticks failed 3 or more times in 5 minutes; /aws/lambda/titus-${stage}-scheduler says why`,
      metric: metric('TickErrors', 'Sum', 5),
      threshold: 3,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    tickErrorsAlarm.addAlarmAction(action);

    // Rows of two graphs; every Titus metric is one value a minute (counters as Sum, gauges as
    // Maximum). terraform/alarms.tf lays out the same dashboard.
    const graph = (title: string, metrics: cloudwatch.IMetric[]) =>
      new cloudwatch.GraphWidget({ title, left: metrics, width: 12, height: 6 });
    const sums = (...names: string[]) => names.map((name) => metric(name, 'Sum'));
    const deadLetterQueues = [...Object.values(this.deadLetterQueues), this.eventsDeadLetterQueue];
    new cloudwatch.Dashboard(this, 'Dashboard', {
      dashboardName: `titus-${stage}`,
      widgets: [
        [
          graph('Placements per minute', [metric('TasksPlaced', 'Sum'), metric('PlacementConflicts', 'Sum'), metric('TasksMaterialized', 'Sum')]),
          graph('Pending tasks', [metric('TasksPending', 'Maximum'), metric('TasksUnplaced', 'Maximum')]),
        ],
        [
          graph('Oldest pending task (ms)', [metric('OldestPendingAgeMs', 'Maximum')]),
          graph('Submit to Launched, slowest per tick (ms)', [metric('SubmitToLaunchedMaxMs', 'Maximum'), metric('SubmitToLaunchedMaxMs', 'p50')]),
        ],
        [
          graph('Tick duration (ms)', [metric('TickDurationMs', 'p50'), metric('TickDurationMs', 'p99')]),
          graph('Lease', [metric('LeaseHeld', 'Minimum'), ...sums('LeaseRenewals', 'LeaseTakeovers', 'TickErrors')]),
        ],
        [
          graph('Lost and stuck', [metric('AgentsLost', 'Sum', 5), metric('TasksLost', 'Sum', 5), metric('TasksStuck', 'Sum', 5), metric('ReconcileErrors', 'Sum', 5)]),
          graph('Dead letters', deadLetterQueues.map((q) => q.metricApproximateNumberOfMessagesVisible({ statistic: 'Maximum' }))),
        ],
        [
          graph('Intake per minute', sums('JobsAccepted', 'SubmissionsRejected')),
          graph('API requests per minute', sums('ApiRequests', 'ApiClientErrors', 'ApiServerErrors')),
        ],
        [
          graph('API latency, slowest per minute (ms)', [metric('ApiLatencyMaxMs', 'Maximum')]),
          graph('Status updates per minute', sums('StatusUpdatesApplied', 'StatusUpdatesIgnored')),
        ],
        [
          graph('Events per minute', sums('EventsWritten', 'EventsPublished')),
          graph('Event stream age (ms)', [metric('EventStreamAgeMs', 'Maximum')]),
        ],
        [
          graph('Scaler', [...sums('AgentsLaunched', 'AgentsTerminated'), metric('PoolAgentsDesired', 'Maximum')]),
          // Each agent reports its running tasks once a minute: the Sum is the fleet's.
          graph('Agents', sums('AgentTasksRunning', 'AgentLaunchFailures', 'AgentHeartbeatFailures')),
        ],
        [
          graph('Image pull, slowest per minute (ms)', [metric('AgentImagePullMaxMs', 'Maximum')]),
          // NumberOfMessagesSent counts SendMessage calls (the status function's reasoned dead
          // letters, the stream mappings' failures), not SQS's own redrive after maxReceiveCount
          // receives: those show in "Dead letters" above and in the dead-letter alarms.
          graph('Dead letters sent per minute', deadLetterQueues.map((q) => q.metricNumberOfMessagesSent({ statistic: 'Sum', period: cdk.Duration.minutes(1) }))),
        ],
        [
          new cloudwatch.AlarmStatusWidget({ title: 'Alarms', alarms: [leaseAlarm, pendingAlarm, tickErrorsAlarm], width: 24, height: 3 }),
        ],
      ],
    });
  }

  private suppressions(): void {
    const stage = this.props.stage;
    const tableIndexes = Object.values(this.tables).map((t) => `Resource::<${this.getLogicalId(t.node.defaultChild as cdk.CfnElement)}.Arn>/index/*`);
    const roles = [...Object.values(this.functions).map((f) => f.role!), this.agentRole];
    for (const role of roles) {
      NagSuppressions.addResourceSuppressions(
        role,
        [
          {
            id: 'AwsSolutions-IAM5',
            reason: 'Queries use the global secondary indexes of the stage\'s own tables, which IAM names only as table/index/*',
            appliesTo: tableIndexes,
          },
          {
            id: 'AwsSolutions-IAM5',
            reason: 'Active X-Ray tracing: PutTraceSegments and PutTelemetryRecords support no resource-level permissions',
            appliesTo: ['Resource::*'],
          },
          {
            id: 'AwsSolutions-IAM5',
            reason: `Agents' queues are created at run time, one per instance, named titus-${stage}-agent-{instance id}`,
            appliesTo: [`Resource::arn:<AWS::Partition>:sqs:<AWS::Region>:<AWS::AccountId>:titus-${stage}-agent-*`],
          },
        ],
        true,
      );
    }
    NagSuppressions.addResourceSuppressions(
      this.functions.api.role!,
      [
        {
          id: 'AwsSolutions-IAM5',
          reason: 'GET /api/v3/tasks/{id}/logs reads the stream of any task of the stage, named {jobId}/{taskId} by the agent at run time; only streams of the task log group, read only',
          appliesTo: [{ regex: '/^Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:<TaskLogGroup[A-Za-z0-9]+>:log-stream:\\*$/g' }],
        },
      ],
      true,
    );
    NagSuppressions.addResourceSuppressions(
      this.functions.events.role!,
      [
        {
          id: 'AwsSolutions-IAM5',
          reason: 'dynamodb:ListStreams, which the stream event sources grant, supports no resource-level permissions; DescribeStream, GetRecords and GetShardIterator name the three streams',
          appliesTo: ['Resource::*'],
        },
      ],
      true,
    );
    NagSuppressions.addResourceSuppressions(
      this.functions.scaler.role!,
      [
        {
          id: 'AwsSolutions-IAM5',
          reason: 'EC2 Describe* calls support no resource-level permissions; launches create instances, volumes, network interfaces, fleets and spot requests whose ids are not known in advance, limited by the required stage tag on instances and the launch template; terminations require the stage and scaler tags; pool parameters are one per pool under the scaler path',
          appliesTo: [
            'Resource::*',
            'Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:instance/*',
            'Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:fleet/*',
            'Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:volume/*',
            'Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:network-interface/*',
            'Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:subnet/*',
            'Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:security-group/*',
            'Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:spot-instances-request/*',
            'Resource::arn:<AWS::Partition>:ec2:<AWS::Region>::image/*',
            'Resource::arn:<AWS::Partition>:iam::<AWS::AccountId>:role/aws-service-role/spot.amazonaws.com/*',
            `Resource::arn:<AWS::Partition>:ssm:<AWS::Region>:<AWS::AccountId>:parameter/titus/${stage}/scaler/*`,
          ],
        },
      ],
      true,
    );
    NagSuppressions.addResourceSuppressions(
      this.agentRole,
      [
        {
          id: 'AwsSolutions-IAM5',
          reason: 'ecr:GetAuthorizationToken supports no resource; tasks may run images from any of the account\'s repositories (the job policy parameter limits registries); Docker names a log stream per task, and each agent a metrics stream after its id; the agent settings are parameters under the agent path; tasks without a role read only the secrets under the stage shared secrets path; the agent binary is a CDK asset in the bootstrap bucket',
          appliesTo: [
            'Resource::*',
            'Resource::arn:<AWS::Partition>:ecr:<AWS::Region>:<AWS::AccountId>:repository/*',
            { regex: '/^Resource::<TaskLogGroup.*\\.Arn>:log-stream:\\*$/g' },
            { regex: '/^Resource::<AgentLogGroup.*\\.Arn>:log-stream:\\*$/g' },
            `Resource::arn:<AWS::Partition>:ssm:<AWS::Region>:<AWS::AccountId>:parameter/titus/${stage}/agent/*`,
            `Resource::arn:<AWS::Partition>:ssm:<AWS::Region>:<AWS::AccountId>:parameter/titus/${stage}/secrets/*`,
            `Resource::arn:<AWS::Partition>:secretsmanager:<AWS::Region>:<AWS::AccountId>:secret:titus/${stage}/secrets/*`,
            'Action::s3:GetObject*',
            'Action::s3:GetBucket*',
            'Action::s3:List*',
            { regex: '/^Resource::arn:<AWS::Partition>:s3:::cdk-.*\\/\\*$/g' },
          ],
        },
        {
          id: 'AwsSolutions-IAM5',
          reason: `Task roles are the users' own, named by each job at run time; sts:AssumeRole is limited to the account's roles tagged ${TAG_TASK_ROLE}=${stage}, and each role's trust policy must name the agent role`,
          appliesTo: ['Resource::arn:<AWS::Partition>:iam::<AWS::AccountId>:role/*'],
        },
      ],
      true,
    );
    NagSuppressions.addResourceSuppressions(
      this.queues['submit-rejected'],
      [
        {
          id: 'AwsSolutions-SQS3',
          reason: 'The rejected-submissions queue is where producers read why a descriptor was refused; nothing consumes it, so nothing can fail into a DLQ',
        },
      ],
    );
    NagSuppressions.addResourceSuppressions(
      this.eventsDeadLetterQueue,
      [
        {
          id: 'AwsSolutions-SQS3',
          reason: 'The events DLQ is the on-failure destination of the stream event sources (a dead-letter queue cdk-nag does not recognise as one); nothing consumes it, so nothing can fail into a DLQ of its own',
        },
      ],
    );
    NagSuppressions.addResourceSuppressions(
      this.stateMachine,
      [
        {
          id: 'AwsSolutions-SF1',
          reason: 'The loop ticks about once a second; logging ALL events would write millions of events a month. Errors are logged, and the scheduler Lambda logs every tick',
        },
        {
          id: 'AwsSolutions-IAM5',
          reason: 'X-Ray (PutTraceSegments, PutTelemetryRecords) and CloudWatch Logs delivery (CreateLogDelivery and friends) support no resource-level permissions',
          appliesTo: ['Resource::*'],
        },
      ],
      true,
    );
    NagSuppressions.addStackSuppressions(this, [
      {
        id: 'AwsSolutions-IAM5',
        reason: 'A grant to invoke a function (the loop\'s, the schedules\') covers its versions and aliases, which IAM names function:*',
        appliesTo: [{ regex: '/^Resource::<Function[A-Za-z0-9]+\\.Arn>:\\*$/g' }],
      },
      {
        id: 'AwsSolutions-SNS2',
        reason: 'Alarm notifications carry no data; CloudWatch cannot publish to a topic encrypted with the AWS-managed SNS key, and a customer key costs more than the alarms',
      },
    ]);
  }
}
