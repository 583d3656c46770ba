// The key resources of the synthesized stack and their IAM.

import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';

import { Match, Template } from 'aws-cdk-lib/assertions';

import { buildApp } from '../bin/titus';
import { loadDefinitions } from '../lib/definitions';
import { DOCKER_SETUP_COMMANDS, FUNCTION_BINARIES, STATE_MACHINE_FILE } from '../lib/titus-stack';
import { actionsOf, newApp, resources, STAGE, statementsOfRole, synthesized } from './helpers';

const { template } = synthesized();

function logicalIdOfFunction(role: string): string {
  const found = Object.entries(resources(template, 'AWS::Lambda::Function')).find(
    ([, r]) => r.Properties.FunctionName === `titus-${STAGE}-${role}`,
  );
  assert.ok(found, `function titus-${STAGE}-${role}`);
  return found[0];
}

describe('functions', () => {
  it('deploys every Lambda binary on provided.al2023 arm64 with the stage set', () => {
    for (const role of Object.keys(FUNCTION_BINARIES)) {
      template.hasResourceProperties('AWS::Lambda::Function', {
        FunctionName: `titus-${STAGE}-${role}`,
        Runtime: 'provided.al2023',
        Architectures: ['arm64'],
        Handler: 'bootstrap',
        Environment: { Variables: Match.objectLike({ TITUS_STAGE: STAGE }) },
      });
    }
  });

  it('wires the submit, status and registrations queues with partial batch responses', () => {
    for (const [role, queue] of [
      ['submit', `titus-${STAGE}-submit`],
      ['status', `titus-${STAGE}-status`],
      ['status', `titus-${STAGE}-registrations`],
    ]) {
      const queueId = Object.entries(resources(template, 'AWS::SQS::Queue')).find(
        ([, r]) => r.Properties.QueueName === queue,
      )![0];
      template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
        FunctionName: { Ref: logicalIdOfFunction(role) },
        EventSourceArn: { 'Fn::GetAtt': [queueId, 'Arn'] },
        FunctionResponseTypes: ['ReportBatchItemFailures'],
      });
    }
    // And the four table streams of the event feed (below).
    template.resourceCountIs('AWS::Lambda::EventSourceMapping', 7);
  });

  it('gives each function its own role writing only its own log group, no managed policy', () => {
    for (const role of Object.keys(FUNCTION_BINARIES)) {
      const fn = resources(template, 'AWS::Lambda::Function')[logicalIdOfFunction(role)];
      const roleId = fn.Properties.Role['Fn::GetAtt'][0];
      const roleResource = resources(template, 'AWS::IAM::Role')[roleId];
      assert.equal(roleResource.Properties.ManagedPolicyArns, undefined, `${role} has no managed policy`);
      const statements = statementsOfRole(template, roleId);
      const writes = statements.filter((s) => actionsOf([s]).some((a) => a === 'logs:CreateLogStream' || a === 'logs:PutLogEvents'));
      assert.equal(writes.length, 1, `${role}: one statement writes logs`);
      assert.deepEqual(writes[0].Resource, { 'Fn::GetAtt': [fn.Properties.LoggingConfig.LogGroup.Ref, 'Arn'] }, `${role} writes its own group`);
      // The api function also reads task logs (below); nothing else of CloudWatch Logs.
      const others = statements.filter((s) => s !== writes[0] && actionsOf([s]).some((a) => a.startsWith('logs:')));
      assert.equal(others.length, role === 'api' ? 1 : 0, `${role}: other logs statements ${JSON.stringify(others)}`);
    }
  });

  it('grants no wildcard actions to anyone', () => {
    const all = Object.values(resources(template, 'AWS::IAM::Policy')).flatMap(
      (p: any) => p.Properties.PolicyDocument.Statement,
    );
    for (const action of actionsOf(all)) {
      assert.ok(!/^(\*|[a-z0-9-]+:\*)$/.test(action), `wildcard action ${action}`);
    }
  });
});

describe('the event feed', () => {
  const defs = loadDefinitions(STAGE);
  const tables = resources(template, 'AWS::DynamoDB::Table');
  const tableId = (role: string) =>
    Object.entries(tables).find(([, t]) => t.Properties.TableName === `titus-${STAGE}-${role}`)![0];
  const queueId = (name: string) =>
    Object.entries(resources(template, 'AWS::SQS::Queue')).find(([, q]) => q.Properties.QueueName === name)![0];
  const roleOf = (role: string) =>
    resources(template, 'AWS::Lambda::Function')[logicalIdOfFunction(role)].Properties.Role['Fn::GetAtt'][0];
  const eventsStatements = statementsOfRole(template, roleOf('events'));
  const busId = Object.keys(resources(template, 'AWS::Events::EventBus'))[0];
  const dlqId = queueId(`titus-${STAGE}-events-dlq`);
  const streamed = ['jobs', 'tasks', 'placement-results', 'agents'];
  const streamArn = (role: string) => ({ 'Fn::GetAtt': [tableId(role), 'StreamArn'] });

  it('streams new and old images of exactly the tables definitions.json marks, jobs, tasks, placement results and agents', () => {
    assert.deepEqual(defs.tables.filter((t) => t.stream).map((t) => t.role).sort(), [...streamed].sort());
    for (const [id, table] of Object.entries(tables)) {
      const role = table.Properties.TableName.replace(`titus-${STAGE}-`, '');
      if (streamed.includes(role)) {
        assert.deepEqual(table.Properties.StreamSpecification, { StreamViewType: 'NEW_AND_OLD_IMAGES' }, id);
      } else {
        assert.equal(table.Properties.StreamSpecification, undefined, `${role} has no stream`);
      }
    }
  });

  it('keeps events in their own table: feed and event keys, expiring by TTL, on demand with PITR', () => {
    const events = tables[tableId('events')].Properties;
    assert.deepEqual(events.KeySchema, [
      { AttributeName: 'feedKey', KeyType: 'HASH' },
      { AttributeName: 'eventKey', KeyType: 'RANGE' },
    ]);
    assert.deepEqual(events.TimeToLiveSpecification, { AttributeName: 'expiresAt', Enabled: true });
    assert.equal(events.BillingMode, 'PAY_PER_REQUEST');
    assert.deepEqual(events.PointInTimeRecoverySpecification, { PointInTimeRecoveryEnabled: true });
    assert.equal(events.GlobalSecondaryIndexes, undefined);
  });

  it('feeds every stream to the events function from the start, in batches of 100 with no window, retrying halves, then the DLQ', () => {
    for (const role of streamed) {
      template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
        FunctionName: { Ref: logicalIdOfFunction('events') },
        EventSourceArn: streamArn(role),
        StartingPosition: 'TRIM_HORIZON',
        BatchSize: 100,
        MaximumBatchingWindowInSeconds: 0,
        BisectBatchOnFunctionError: true,
        MaximumRetryAttempts: 10,
        MaximumRecordAgeInSeconds: 86400,
        FunctionResponseTypes: ['ReportBatchItemFailures'],
        DestinationConfig: { OnFailure: { Destination: { 'Fn::GetAtt': [dlqId, 'Arn'] } } },
      });
    }
    const toEvents = Object.values(resources(template, 'AWS::Lambda::EventSourceMapping')).filter(
      (m: any) => m.Properties.FunctionName.Ref === logicalIdOfFunction('events'),
    );
    assert.equal(toEvents.length, streamed.length, 'one mapping per stream');
    // Only the agents' mapping filters: registrations and records of draining or lost agents,
    // never an active agent's allocation writes.
    for (const mapping of toEvents as any[]) {
      const arn = JSON.stringify(mapping.Properties.EventSourceArn);
      const patterns = (mapping.Properties.FilterCriteria?.Filters ?? []).map((f: any) => JSON.parse(f.Pattern));
      if (arn === JSON.stringify(streamArn('agents'))) {
        assert.deepEqual(patterns, [
          { eventName: ['INSERT'] },
          { dynamodb: { NewImage: { agentState: { S: ['draining', 'lost'] } } } },
          { dynamodb: { OldImage: { agentState: { S: ['draining', 'lost'] } } } },
        ]);
      } else {
        assert.deepEqual(patterns, [], `${arn} is not filtered`);
      }
    }
  });

  it('runs the events function like the others: 60 s, 256 MB, JSON logs, X-Ray, the stage', () => {
    template.hasResourceProperties('AWS::Lambda::Function', {
      FunctionName: `titus-${STAGE}-events`,
      Timeout: 60,
      MemorySize: 256,
      LoggingConfig: Match.objectLike({ LogFormat: 'JSON', ApplicationLogLevel: 'INFO', SystemLogLevel: 'WARN' }),
      TracingConfig: { Mode: 'Active' },
      Environment: { Variables: { TITUS_STAGE: STAGE } },
    });
    assert.equal(FUNCTION_BINARIES.events, 'titus-events-lambda');
  });

  it('lets the events function write only events, read only jobs, read only its streams and publish only to its bus', () => {
    const on = (resource: unknown) => actionsOf(eventsStatements.filter((s) => JSON.stringify(s.Resource) === JSON.stringify(resource))).sort();
    const dynamo = eventsStatements.filter((s) => actionsOf([s]).some((a) => a.startsWith('dynamodb:')));
    assert.deepEqual(on({ 'Fn::GetAtt': [tableId('events'), 'Arn'] }), ['dynamodb:BatchWriteItem', 'dynamodb:PutItem']);
    assert.deepEqual(on({ 'Fn::GetAtt': [tableId('jobs'), 'Arn'] }), ['dynamodb:GetItem']);
    for (const role of streamed) {
      assert.deepEqual(on(streamArn(role)), ['dynamodb:DescribeStream', 'dynamodb:GetRecords', 'dynamodb:GetShardIterator']);
    }
    // ListStreams supports no resource-level permissions; it is the only DynamoDB action on *.
    assert.deepEqual(actionsOf(dynamo.filter((s) => s.Resource === '*')), ['dynamodb:ListStreams']);
    const dynamoResources = new Set(dynamo.map((s) => JSON.stringify(s.Resource)));
    assert.deepEqual(
      [...dynamoResources].sort(),
      [
        JSON.stringify({ 'Fn::GetAtt': [tableId('events'), 'Arn'] }),
        JSON.stringify({ 'Fn::GetAtt': [tableId('jobs'), 'Arn'] }),
        ...streamed.map((r) => JSON.stringify(streamArn(r))),
        '"*"',
      ].sort(),
      'no other table, no index',
    );
    const sqs = eventsStatements.filter((s) => actionsOf([s]).some((a) => a.startsWith('sqs:')));
    assert.deepEqual(sqs.map((s) => s.Resource), [{ 'Fn::GetAtt': [dlqId, 'Arn'] }]);
    assert.ok(actionsOf(sqs).includes('sqs:SendMessage'));
    assert.ok(!actionsOf(sqs).includes('sqs:ReceiveMessage'));
    const put = eventsStatements.filter((s) => actionsOf([s]).some((a) => a.startsWith('events:')));
    assert.deepEqual(put.map((s) => [actionsOf([s]), s.Resource]), [[['events:PutEvents'], { 'Fn::GetAtt': [busId, 'Arn'] }]]);
    assert.ok(!actionsOf(eventsStatements).some((a) => a.startsWith('ec2:')));
    // Its control plane reads the stage's settings at start, as every function's does; nothing else of SSM.
    const ssm = actionsOf(eventsStatements).filter((a) => a.startsWith('ssm:'));
    assert.deepEqual([...new Set(ssm)].sort(), ['ssm:GetParameter', 'ssm:GetParameters']);
  });

  it('lets the API query the events table and nothing more, and no other function near the feed', () => {
    const api = statementsOfRole(template, roleOf('api')).filter((s) => JSON.stringify(s.Resource).includes(`"${tableId('events')}"`));
    assert.deepEqual(actionsOf(api), ['dynamodb:Query']);
    for (const role of Object.keys(FUNCTION_BINARIES).filter((r) => r !== 'events')) {
      const statements = statementsOfRole(template, roleOf(role));
      const actions = actionsOf(statements);
      assert.ok(!actions.some((a) => a.startsWith('events:')), `${role} may not publish events`);
      assert.ok(!actions.includes('dynamodb:GetRecords'), `${role} may not read streams`);
      if (role !== 'api') assert.ok(!JSON.stringify(statements).includes(`"${tableId('events')}"`), `${role} may not touch the events table`);
    }
  });

  it('publishes to the bus titus-{stage}-events, which the stack outputs', () => {
    template.resourceCountIs('AWS::Events::EventBus', 1);
    template.hasResourceProperties('AWS::Events::EventBus', { Name: `titus-${STAGE}-events` });
    template.hasOutput('EventBusName', { Value: { Ref: busId } });
    template.hasOutput('EventBusArn', { Value: { 'Fn::GetAtt': [busId, 'Arn'] } });
  });

  it('keeps what fails on an encrypted DLQ for 14 days, and alarms on it and on the streams\' lag', () => {
    const dlq = resources(template, 'AWS::SQS::Queue')[dlqId].Properties;
    assert.equal(dlq.MessageRetentionPeriod, 14 * 24 * 3600);
    assert.equal(dlq.SqsManagedSseEnabled, true);
    const alarms = Object.values(resources(template, 'AWS::CloudWatch::Alarm')).map((a: any) => a.Properties);
    const deadLetters = alarms.find((a) => a.AlarmName === `titus-${STAGE}-events-dead-letters`);
    assert.deepEqual(deadLetters?.Dimensions, [{ Name: 'QueueName', Value: { 'Fn::GetAtt': [dlqId, 'QueueName'] } }]);
    assert.equal(deadLetters.Threshold, 0);
    const lag = alarms.find((a) => a.MetricName === 'IteratorAge');
    assert.ok(lag, 'an IteratorAge alarm');
    assert.equal(lag.AlarmName, `titus-${STAGE}-events-iterator-age`);
    assert.equal(lag.Namespace, 'AWS/Lambda');
    assert.deepEqual(lag.Dimensions, [{ Name: 'FunctionName', Value: { Ref: logicalIdOfFunction('events') } }]);
    assert.equal(lag.Statistic, 'Maximum');
    assert.equal(lag.Threshold, 60000);
    assert.equal(lag.ComparisonOperator, 'GreaterThanThreshold');
    assert.equal(lag.Period * lag.EvaluationPeriods, 300, 'for 5 minutes');
    assert.ok(alarms.some((a) => a.AlarmName === `titus-${STAGE}-events-errors`));
  });
});

const logGroupId = (name: string) =>
  Object.entries(resources(template, 'AWS::Logs::LogGroup')).find(([, g]) => g.Properties.LogGroupName === name)![0];

describe('the API', () => {
  it('reads task logs (GET /api/v3/tasks/{id}/logs) from the task log group only, read only', () => {
    const apiRole = resources(template, 'AWS::Lambda::Function')[logicalIdOfFunction('api')].Properties.Role['Fn::GetAtt'][0];
    const taskLogs = logGroupId(`/titus/${STAGE}/tasks`);
    const reads = statementsOfRole(template, apiRole).filter((s) => actionsOf([s]).some((a) => a.startsWith('logs:') && a !== 'logs:CreateLogStream' && a !== 'logs:PutLogEvents'));
    assert.equal(reads.length, 1, JSON.stringify(reads));
    assert.deepEqual(actionsOf(reads).sort(), ['logs:DescribeLogStreams', 'logs:GetLogEvents']);
    assert.deepEqual(reads[0].Resource, [
      { 'Fn::GetAtt': [taskLogs, 'Arn'] },
      {
        'Fn::Join': ['', [
          'arn:', { Ref: 'AWS::Partition' }, ':logs:', { Ref: 'AWS::Region' }, ':', { Ref: 'AWS::AccountId' },
          ':log-group:', { Ref: taskLogs }, ':log-stream:*',
        ]],
      },
    ]);
    for (const role of Object.keys(FUNCTION_BINARIES).filter((r) => r !== 'api')) {
      const other = resources(template, 'AWS::Lambda::Function')[logicalIdOfFunction(role)].Properties.Role['Fn::GetAtt'][0];
      const actions = actionsOf(statementsOfRole(template, other));
      assert.ok(!actions.includes('logs:GetLogEvents') && !actions.includes('logs:DescribeLogStreams'), `${role} may not read logs`);
      assert.ok(!JSON.stringify(statementsOfRole(template, other)).includes(`"${taskLogs}"`), `${role} may not touch task logs`);
    }
  });

  it('is an HTTP API whose every route needs IAM authorization and reaches the api Lambda', () => {
    template.hasResourceProperties('AWS::ApiGatewayV2::Api', { ProtocolType: 'HTTP' });
    const routes = Object.values(resources(template, 'AWS::ApiGatewayV2::Route'));
    assert.ok(routes.length >= 1);
    for (const route of routes) assert.equal(route.Properties.AuthorizationType, 'AWS_IAM');
    template.hasResourceProperties('AWS::ApiGatewayV2::Integration', {
      IntegrationType: 'AWS_PROXY',
      IntegrationUri: { 'Fn::GetAtt': [logicalIdOfFunction('api'), 'Arn'] },
    });
    template.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
      StageName: '$default',
      AutoDeploy: true,
      AccessLogSettings: Match.objectLike({ DestinationArn: Match.anyValue() }),
    });
  });
});

describe('the scheduler loop', () => {
  it('is the Express state machine from statemachines/ with the scheduler substituted', () => {
    const machines = Object.values(resources(template, 'AWS::StepFunctions::StateMachine'));
    assert.equal(machines.length, 1);
    const machine = machines[0].Properties;
    assert.equal(machine.StateMachineType, 'EXPRESS');
    assert.deepEqual(machine.DefinitionSubstitutions, {
      SchedulerFunctionArn: { 'Fn::GetAtt': [logicalIdOfFunction('scheduler'), 'Arn'] },
    });
    assert.equal(typeof machine.DefinitionString, 'string', 'the definition is inline');
    assert.deepEqual(JSON.parse(machine.DefinitionString), JSON.parse(fs.readFileSync(STATE_MACHINE_FILE, 'utf8')));
    assert.ok(machine.DefinitionString.includes('${SchedulerFunctionArn}'));
  });

  it('may invoke only the scheduler function', () => {
    const machineRole = Object.values(resources(template, 'AWS::StepFunctions::StateMachine'))[0].Properties.RoleArn[
      'Fn::GetAtt'
    ][0];
    const invoke = statementsOfRole(template, machineRole).filter((s) => actionsOf([s]).includes('lambda:InvokeFunction'));
    assert.equal(invoke.length, 1);
    const target = JSON.stringify(invoke[0].Resource);
    assert.ok(target.includes(logicalIdOfFunction('scheduler')));
    assert.ok(!target.includes(logicalIdOfFunction('api')));
  });

  it('lets the scheduler write a new job\'s tasks and clear its mark, but not put or delete jobs', () => {
    const fn = resources(template, 'AWS::Lambda::Function')[logicalIdOfFunction('scheduler')];
    const roleId = fn.Properties.Role['Fn::GetAtt'][0];
    const jobsTable = Object.entries(resources(template, 'AWS::DynamoDB::Table')).find(
      ([, t]) => t.Properties.TableName === `titus-${STAGE}-jobs`,
    )![0];
    const onJobs = statementsOfRole(template, roleId).filter((s) =>
      JSON.stringify(s.Resource).includes(`"${jobsTable}"`),
    );
    const actions = actionsOf(onJobs);
    for (const expected of ['dynamodb:Query', 'dynamodb:GetItem', 'dynamodb:ConditionCheckItem', 'dynamodb:UpdateItem']) {
      assert.ok(actions.includes(expected), `scheduler may ${expected} on jobs`);
    }
    for (const forbidden of ['dynamodb:PutItem', 'dynamodb:DeleteItem', 'dynamodb:Scan']) {
      assert.ok(!actions.includes(forbidden), `scheduler may not ${forbidden} on jobs`);
    }
  });

  it('is started every minute by EventBridge Scheduler, as are the scaler and the reconciler', () => {
    const machineId = Object.keys(resources(template, 'AWS::StepFunctions::StateMachine'))[0];
    template.hasResourceProperties('AWS::Scheduler::Schedule', {
      ScheduleExpression: 'rate(1 minute)',
      Target: Match.objectLike({ Arn: { Ref: machineId } }),
    });
    for (const role of ['scaler', 'reconciler']) {
      template.hasResourceProperties('AWS::Scheduler::Schedule', {
        ScheduleExpression: 'rate(1 minute)',
        Target: Match.objectLike({ Arn: { 'Fn::GetAtt': [logicalIdOfFunction(role), 'Arn'] } }),
      });
    }
  });
});

describe('agents', () => {
  it('start from a launch template that installs the agent as a systemd unit, IMDSv2 only, one hop', () => {
    const templates = Object.values(resources(template, 'AWS::EC2::LaunchTemplate'));
    assert.equal(templates.length, 1);
    const props = templates[0].Properties;
    assert.equal(props.LaunchTemplateName, `titus-${STAGE}-agent`);
    assert.deepEqual(props.LaunchTemplateData.MetadataOptions, {
      HttpPutResponseHopLimit: 1,
      HttpTokens: 'required',
      InstanceMetadataTags: 'enabled',
    });
    assert.ok(props.LaunchTemplateData.IamInstanceProfile);
    assert.equal(props.LaunchTemplateData.BlockDeviceMappings[0].Ebs.Encrypted, true);
    const userData = JSON.stringify(props.LaunchTemplateData.UserData);
    for (const needle of [
      'dnf install -y docker',
      'aws s3 cp',
      '/etc/systemd/system/titus-agent.service',
      'ExecStart=/usr/local/bin/titus-agent run',
      `TITUS_STAGE=${STAGE}`,
      'systemctl enable --now titus-agent',
    ]) {
      assert.ok(userData.includes(needle), `user data has ${needle}`);
    }
  });

  const agentRoleId = Object.entries(resources(template, 'AWS::IAM::Role')).find(([id]) => id.startsWith('AgentRole'))![0];
  const agentStatements = statementsOfRole(template, agentRoleId);
  const tableId = (role: string) =>
    Object.entries(resources(template, 'AWS::DynamoDB::Table')).find(([, t]) => t.Properties.TableName === `titus-${STAGE}-${role}`)![0];
  const queueId = (name: string) =>
    Object.entries(resources(template, 'AWS::SQS::Queue')).find(([, q]) => q.Properties.QueueName === name)![0];

  it('have a role limited to their own queue, their settings, their images and their heartbeat', () => {
    const actions = actionsOf(agentStatements);
    for (const expected of ['sqs:ReceiveMessage', 'sqs:SendMessage', 'dynamodb:GetItem', 'dynamodb:PutItem', 'ssm:GetParametersByPath', 'ecr:BatchGetImage']) {
      assert.ok(actions.includes(expected), `agent may ${expected}`);
    }
    for (const forbidden of ['sqs:CreateQueue', 'sqs:SetQueueAttributes', 'sqs:DeleteQueue', 'dynamodb:Scan', 'dynamodb:Query', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem', 'ec2:RunInstances']) {
      assert.ok(!actions.includes(forbidden), `agent may not ${forbidden}`);
    }
  });

  it('write task logs to the task log group and their metrics to the agents\' group, which keeps them 30 days', () => {
    const group = (name: string) => resources(template, 'AWS::Logs::LogGroup')[logGroupId(name)].Properties;
    assert.equal(group(`/titus/${STAGE}/tasks`).RetentionInDays, 30);
    assert.equal(group(`/titus/${STAGE}/agents`).RetentionInDays, 30);
    const logs = agentStatements.filter((s) => actionsOf([s]).some((a) => a.startsWith('logs:')));
    const on = (id: string) => logs.filter((s) => JSON.stringify(s.Resource).includes(`"${id}"`));
    const metrics = on(logGroupId(`/titus/${STAGE}/agents`));
    assert.equal(metrics.length, 1);
    assert.deepEqual(actionsOf(metrics).sort(), ['logs:CreateLogStream', 'logs:PutLogEvents']);
    const metricsGroupArn = { 'Fn::GetAtt': [logGroupId(`/titus/${STAGE}/agents`), 'Arn'] };
    assert.deepEqual(metrics[0].Resource, [metricsGroupArn, { 'Fn::Join': ['', [metricsGroupArn, ':log-stream:*']] }]);
    assert.equal(on(logGroupId(`/titus/${STAGE}/tasks`)).length, 1);
    assert.equal(logs.length, 2, 'no other log group');
    assert.ok(!actionsOf(logs).includes('logs:GetLogEvents'), 'agents do not read logs back');
  });

  it('cannot receive from or send to another agent\'s queue', () => {
    const own = JSON.stringify(`titus-${STAGE}-agent-\${ec2:InstanceID}`).slice(1, -1);
    for (const statement of agentStatements.filter((s) => actionsOf([s]).some((a) => a.startsWith('sqs:')))) {
      const text = JSON.stringify(statement.Resource);
      assert.ok(!text.includes(`titus-${STAGE}-agent-*`), `no wildcard over agents' queues: ${text}`);
      if (actionsOf([statement]).includes('sqs:ReceiveMessage')) {
        assert.ok(text.includes(own), `receives only on its own queue: ${text}`);
      }
    }
    const sendTo = agentStatements
      .filter((s) => actionsOf([s]).includes('sqs:SendMessage'))
      .flatMap((s) => (Array.isArray(s.Resource) ? s.Resource : [s.Resource]))
      .map((r) => JSON.stringify(r));
    assert.deepEqual(sendTo.sort(), [
      JSON.stringify({ 'Fn::GetAtt': [queueId(`titus-${STAGE}-registrations`), 'Arn'] }),
      JSON.stringify({ 'Fn::GetAtt': [queueId(`titus-${STAGE}-status`), 'Arn'] }),
      ...sendTo.filter((r) => r.includes(`${own}-dlq`)),
    ].sort());
    assert.equal(sendTo.filter((r) => r.includes(`${own}-dlq`)).length, 1, 'and its own DLQ');
  });

  it('writes no record: only its own heartbeat item, by DynamoDB\'s leading-key condition', () => {
    const dynamo = agentStatements.filter((s) => actionsOf([s]).some((a) => a.startsWith('dynamodb:')));
    const writes = dynamo.filter((s) => actionsOf([s]).some((a) => a !== 'dynamodb:GetItem'));
    assert.equal(writes.length, 1);
    assert.deepEqual(writes[0].Resource, { 'Fn::GetAtt': [tableId('heartbeats'), 'Arn'] });
    assert.deepEqual(writes[0].Condition, { 'ForAllValues:StringEquals': { 'dynamodb:LeadingKeys': ['${aws:userid}'] } });
    const agents = dynamo.find((s) => JSON.stringify(s.Resource) === JSON.stringify({ 'Fn::GetAtt': [tableId('agents'), 'Arn'] }));
    assert.deepEqual(agents?.Condition, { 'ForAllValues:StringEquals': { 'dynamodb:LeadingKeys': ['${ec2:InstanceID}'] } });
    for (const role of ['jobs', 'idempotency', 'leases']) {
      assert.ok(!JSON.stringify(dynamo).includes(tableId(role)), `agent may not touch the ${role} table`);
    }
  });

  it('are believed only from the agent role\'s sessions: the rules name its role id', () => {
    const rules = Object.values(resources(template, 'AWS::SSM::Parameter')).find(
      (p: any) => p.Properties.Name === `/titus/${STAGE}/control/rules`,
    );
    assert.ok(
      JSON.stringify(rules.Properties.Value).includes(JSON.stringify({ 'Fn::GetAtt': [agentRoleId, 'RoleId'] })),
      'agent_role_id is the agent role\'s RoleId',
    );
  });

  it('have a role of a fixed name, which the stack outputs for task roles to trust', () => {
    assert.equal(resources(template, 'AWS::IAM::Role')[agentRoleId].Properties.RoleName, `titus-${STAGE}-agent`);
    template.hasOutput('AgentRoleArn', { Value: { 'Fn::GetAtt': [agentRoleId, 'Arn'] } });
  });

  it('may assume only the account\'s roles tagged titus:task-role with its stage', () => {
    const assume = agentStatements.filter((s) => actionsOf([s]).includes('sts:AssumeRole'));
    assert.equal(assume.length, 1, 'one statement grants sts:AssumeRole');
    assert.equal(assume[0].Effect, 'Allow');
    assert.deepEqual(actionsOf(assume), ['sts:AssumeRole']);
    assert.deepEqual(assume[0].Resource, {
      'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':iam::', { Ref: 'AWS::AccountId' }, ':role/*']],
    });
    assert.deepEqual(assume[0].Condition, { StringEquals: { 'aws:ResourceTag/titus:task-role': STAGE } });
    for (const statement of agentStatements.filter((s) => s !== assume[0])) {
      assert.ok(!actionsOf([statement]).some((a) => a.startsWith('sts:')), `no other sts grant: ${JSON.stringify(statement)}`);
    }
  });

  it('reads secrets only in the stage\'s shared space, for tasks without a role', () => {
    const reads = agentStatements.filter((s) =>
      actionsOf([s]).some((a) => a === 'secretsmanager:GetSecretValue' || a === 'ssm:GetParameter'));
    const resourcesOf = (s: any) => JSON.stringify(s.Resource);
    const secrets = reads.filter((s) => actionsOf([s]).includes('secretsmanager:GetSecretValue'));
    assert.equal(secrets.length, 1, 'one statement grants GetSecretValue');
    assert.ok(resourcesOf(secrets[0]).includes(`:secret:titus/${STAGE}/secrets/*`), resourcesOf(secrets[0]));
    const shared = reads.filter((s) => resourcesOf(s).includes(`/titus/${STAGE}/secrets/*`));
    assert.equal(shared.length, 1, 'one statement grants the shared parameters');
    for (const statement of reads) {
      const text = resourcesOf(statement);
      assert.ok(
        text.includes(`/titus/${STAGE}/agent`) || text.includes(`/titus/${STAGE}/secrets/`) || text.includes(`titus/${STAGE}/secrets/`),
        `no read outside the agent's settings and the shared secrets: ${text}`,
      );
    }
  });

  it('cannot assume a role of the stack: none carries the task-role tag', () => {
    for (const [id, role] of Object.entries(resources(template, 'AWS::IAM::Role'))) {
      const tags = (role.Properties.Tags ?? []).map((t: any) => t.Key);
      assert.ok(!tags.includes('titus:task-role'), `${id} is not a task role`);
    }
  });
});

describe('the scaler', () => {
  const roleId = resources(template, 'AWS::Lambda::Function')[logicalIdOfFunction('scaler')].Properties.Role['Fn::GetAtt'][0];
  const statements = statementsOfRole(template, roleId);

  it('terminates only instances carrying the stage and scaler tags', () => {
    const terminate = statements.filter((s) => actionsOf([s]).includes('ec2:TerminateInstances'));
    assert.equal(terminate.length, 1);
    assert.deepEqual(terminate[0].Condition, {
      StringEquals: { 'aws:ResourceTag/titus:stage': STAGE, 'aws:ResourceTag/titus:managed-by': 'titus-scaler' },
    });
  });

  it('launches instances only with the stage tag, and passes only the agent role', () => {
    const instanceLaunch = statements.find(
      (s) => actionsOf([s]).includes('ec2:CreateFleet') && JSON.stringify(s.Resource).includes(':instance/*'),
    );
    assert.deepEqual(instanceLaunch.Condition.StringEquals['aws:RequestTag/titus:stage'], STAGE);
    const pass = statements.find((s) => actionsOf([s]).includes('iam:PassRole'));
    assert.ok(JSON.stringify(pass.Resource).includes('AgentRole'));
    assert.deepEqual(pass.Condition, { StringEquals: { 'iam:PassedToService': 'ec2.amazonaws.com' } });
  });

  it('reads its own parameters and no other function may touch EC2', () => {
    const ssm = statements.filter((s) => actionsOf([s]).some((a) => a.startsWith('ssm:')));
    // Its pools' and its own settings, and the six every function builds the control plane from.
    const controlPlane = ['limits/job', 'policy/jobs', 'policy/teams', 'policy/quotas', 'control/rules', 'scheduler/config'];
    const allowed = (resource: string) =>
      resource.includes(`parameter/titus/${STAGE}/scaler`) ||
      controlPlane.some((suffix) => resource.includes(`parameter/titus/${STAGE}/${suffix}`));
    assert.ok(ssm.length > 0);
    for (const statement of ssm) {
      const resources = [statement.Resource].flat().map((r: unknown) => JSON.stringify(r));
      assert.ok(resources.every(allowed), JSON.stringify(statement.Resource));
    }
    for (const role of Object.keys(FUNCTION_BINARIES).filter((r) => r !== 'scaler')) {
      const other = resources(template, 'AWS::Lambda::Function')[logicalIdOfFunction(role)].Properties.Role['Fn::GetAtt'][0];
      assert.ok(!actionsOf(statementsOfRole(template, other)).some((a) => a.startsWith('ec2:')), `${role} has no EC2 access`);
    }
  });
});

describe('configuration', () => {
  it('creates every parameter the Rust code declares, with the deployment\'s values', () => {
    const defs = loadDefinitions(STAGE);
    const params = Object.values(resources(template, 'AWS::SSM::Parameter'));
    const byName = new Map(params.map((p: any) => [p.Properties.Name, p.Properties]));
    assert.deepEqual([...byName.keys()].sort(), defs.parameters.map((p) => p.name).sort());
    assert.equal(byName.get(`/titus/${STAGE}/api/identities`).Value, '{}', 'no bearer tokens in AWS');
    assert.equal(byName.get(`/titus/${STAGE}/api/admins`).Value, '[]', 'no admin until the operator names one');
    assert.equal(byName.get(`/titus/${STAGE}/limits/job`).Value, defs.parameters.find((p) => p.name.endsWith('/limits/job'))!.defaultValue);
    const pool = JSON.stringify(byName.get(`/titus/${STAGE}/scaler/pools/default`).Value);
    assert.ok(pool.includes('AgentVpcagentsSubnet1'), 'the pool launches into the stack\'s subnets');
    assert.ok(pool.includes(`titus-${STAGE}-agent`));
    const agent = byName.get(`/titus/${STAGE}/agent/config`).Value;
    const parts: unknown[] = agent['Fn::Join'][1];
    const config = JSON.parse(parts.map((p: any) => (typeof p === 'string' ? p : `<${p.Ref}>`)).join(''));
    assert.equal(config.log_driver, 'awslogs');
    assert.equal(config.awslogs_group, `<${logGroupId(`/titus/${STAGE}/tasks`)}>`, 'task logs to the task log group');
    assert.equal(config.metrics_log_group, `<${logGroupId(`/titus/${STAGE}/agents`)}>`, 'agent metrics to the agents\' group');
  });

  it('applies parameter overrides and refuses one naming no parameter', () => {
    const file = `${fs.mkdtempSync('/tmp/titus-infra-')}/overrides.json`;
    fs.writeFileSync(file, JSON.stringify({ '/scheduler/config': { lease_ttl_ms: 20000 } }));
    const { stack } = buildApp(newApp({ 'titus:parameters': file }));
    const { Template } = require('aws-cdk-lib/assertions');
    const params = Template.fromStack(stack).findResources('AWS::SSM::Parameter');
    const scheduler = Object.values(params).find((p: any) => p.Properties.Name === `/titus/${STAGE}/scheduler/config`) as any;
    const value = JSON.parse(scheduler.Properties.Value);
    assert.equal(value.lease_ttl_ms, 20000, 'the named key changes');
    assert.equal(value.strategy, 'binpack', 'the others keep their defaults');
    fs.writeFileSync(file, JSON.stringify({ '/nope': 1 }));
    assert.throws(() => buildApp(newApp({ 'titus:parameters': file })), /names no parameter/);
  });
});

describe('alarms', () => {
  it('watch every dead-letter queue and every function', () => {
    const alarms = Object.values(resources(template, 'AWS::CloudWatch::Alarm')).map((a: any) => a.Properties);
    const dlq = alarms.filter((a) => a.MetricName === 'ApproximateNumberOfMessagesVisible');
    const errors = alarms.filter((a) => a.MetricName === 'Errors');
    // The declared queues' DLQs and the events function's.
    assert.equal(dlq.length, loadDefinitions(STAGE).queues.filter((q) => q.deadLetter).length + 1);
    assert.equal(errors.length, Object.keys(FUNCTION_BINARIES).length);
    // And the events function's lag, the lease, the oldest pending task and tick errors.
    assert.equal(alarms.length, dlq.length + errors.length + 4);
    template.resourceCountIs('AWS::CloudWatch::Alarm', 15);
    const topic = Object.keys(resources(template, 'AWS::SNS::Topic'))[0];
    for (const alarm of alarms) assert.deepEqual(alarm.AlarmActions, [{ Ref: topic }], alarm.AlarmName);
  });

  it('fire when 3 or more scheduler ticks fail in 5 minutes', () => {
    const alarms = Object.values(resources(template, 'AWS::CloudWatch::Alarm')).map((a: any) => a.Properties);
    const tickErrors = alarms.filter((a) => a.MetricName === 'TickErrors');
    assert.equal(tickErrors.length, 1);
    const { AlarmActions, AlarmDescription, Tags, ...alarm } = tickErrors[0];
    assert.ok(AlarmDescription.includes(`/aws/lambda/titus-${STAGE}-scheduler`), AlarmDescription);
    assert.deepEqual(alarm, {
      AlarmName: `titus-${STAGE}-tick-errors`,
      Namespace: 'Titus',
      MetricName: 'TickErrors',
      Dimensions: [{ Name: 'Stage', Value: STAGE }],
      Statistic: 'Sum',
      Period: 300,
      EvaluationPeriods: 1,
      Threshold: 3,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      TreatMissingData: 'notBreaching',
    });
  });

  it('watch the lease and the oldest pending task from the EMF metrics, and a dashboard shows them', () => {
    const alarms = Object.values(resources(template, 'AWS::CloudWatch::Alarm')).map((a: any) => a.Properties);
    const titus = alarms.filter((a) => a.Namespace === 'Titus');
    const lease = titus.find((a) => a.MetricName === 'LeaseHeld');
    const pending = titus.find((a) => a.MetricName === 'OldestPendingAgeMs');
    assert.ok(lease && pending, JSON.stringify(titus));
    assert.deepEqual(lease.Dimensions, [{ Name: 'Stage', Value: STAGE }]);
    assert.equal(lease.TreatMissingData, 'breaching');
    assert.equal(lease.ComparisonOperator, 'LessThanThreshold');
    assert.equal(pending.Threshold, 900000);
    const dashboards = Object.values(resources(template, 'AWS::CloudWatch::Dashboard')).map((d: any) => d.Properties);
    assert.equal(dashboards.length, 1);
    const body = JSON.stringify(dashboards[0].DashboardBody);
    for (const name of ['TasksPlaced', 'TasksPending', 'OldestPendingAgeMs', 'SubmitToLaunchedMaxMs', 'TickDurationMs', 'LeaseTakeovers', 'TasksLost']) {
      assert.ok(body.includes(name), `the dashboard shows ${name}`);
    }
  });

  it('show every control-plane and agent metric on the dashboard, one a minute, counters summed and gauges at their maximum', () => {
    const dashboard = Object.values(resources(template, 'AWS::CloudWatch::Dashboard'))[0] as any;
    const parts: unknown[] = dashboard.Properties.DashboardBody['Fn::Join'][1];
    const body = JSON.parse(parts.map((p: any) => (typeof p === 'string' ? p : `<${p.Ref ?? p['Fn::GetAtt'].join('.')}>`)).join(''));
    const metrics = body.widgets.flatMap((w: any) => w.properties.metrics ?? []);
    const titus = new Map(metrics.filter((m: any) => m[0] === 'Titus').map((m: any) => [`${m[1]} ${m[4].stat}`, m]));
    const expected = {
      Sum: ['LeaseRenewals', 'LeaseTakeovers', 'TickErrors', 'JobsAccepted', 'SubmissionsRejected', 'ApiRequests', 'ApiClientErrors',
        'ApiServerErrors', 'StatusUpdatesApplied', 'StatusUpdatesIgnored', 'EventsWritten', 'EventsPublished', 'AgentsLaunched',
        'AgentsTerminated', 'AgentTasksRunning', 'AgentLaunchFailures', 'AgentHeartbeatFailures'],
      Maximum: ['ApiLatencyMaxMs', 'EventStreamAgeMs', 'PoolAgentsDesired', 'AgentImagePullMaxMs'],
    };
    for (const [stat, names] of Object.entries(expected)) {
      for (const name of names) {
        const m: any = titus.get(`${name} ${stat}`);
        assert.ok(m, `the dashboard shows ${name} (${stat})`);
        assert.deepEqual(m.slice(2, 4), ['Stage', STAGE]);
        assert.equal(m[4].period, 60, `${name} per minute`);
      }
    }
    // Dead-letter arrivals: one line for each DLQ of the stack, the events function's too.
    const sent = metrics.filter((m: any) => m[0] === 'AWS/SQS' && m[1] === 'NumberOfMessagesSent');
    const dlqs = [...loadDefinitions(STAGE).queues.filter((q) => q.deadLetter).map((q) => q.deadLetter!.name), `titus-${STAGE}-events-dlq`];
    const queueIds = Object.fromEntries(Object.entries(resources(template, 'AWS::SQS::Queue')).map(([id, q]) => [q.Properties.QueueName, id]));
    assert.deepEqual(sent.map((m: any) => m[3]).sort(), dlqs.map((n) => `<${queueIds[n]}.QueueName>`).sort());
    for (const m of sent) assert.deepEqual(m[4], { period: 60, stat: 'Sum' });
    const alarmWidget = body.widgets.find((w: any) => w.type === 'alarm');
    assert.equal(alarmWidget.properties.alarms.length, 3, 'the lease, oldest pending and tick errors alarms');
  });
});

describe('tracing', () => {
  it('is active X-Ray on every function', () => {
    const functions = Object.values(resources(template, 'AWS::Lambda::Function')).map((f: any) => f.Properties);
    assert.equal(functions.length, Object.keys(FUNCTION_BINARIES).length);
    for (const f of functions) assert.deepEqual(f.TracingConfig, { Mode: 'Active' }, f.FunctionName);
  });
});

describe('architecture', () => {
  it('is arm64 unless titus:architecture says x86_64, for the Lambdas, the AMI and the pool together', () => {
    const x86 = Template.fromStack(buildApp(newApp({ 'titus:architecture': 'x86_64' })).stack);
    const architectures = (t: Template) =>
      new Set(Object.values(resources(t, 'AWS::Lambda::Function')).flatMap((f: any) => f.Properties.Architectures));
    assert.deepEqual([...architectures(template)], ['arm64']);
    assert.deepEqual([...architectures(x86)], ['x86_64']);
    const amiParameter = (t: Template) =>
      Object.values(t.toJSON().Parameters ?? {})
        .map((p: any) => String(p.Default ?? ''))
        .filter((d) => d.includes('al2023-ami'));
    assert.ok(amiParameter(template).some((d) => d.endsWith('arm64')), `${amiParameter(template)}`);
    assert.ok(amiParameter(x86).some((d) => d.endsWith('x86_64')), `${amiParameter(x86)}`);
    const pool = (t: Template) =>
      JSON.parse(
        Object.values(resources(t, 'AWS::SSM::Parameter')).find(
          (p: any) => p.Properties.Name === `/titus/${STAGE}/scaler/pools/default`,
        )!.Properties.Value['Fn::Join'][1].join(''),
      );
    assert.ok(pool(template).instance_types.every((i: string) => /^[a-z]+\d+g\./.test(i)), 'Graviton types');
    assert.ok(pool(x86).instance_types.every((i: string) => /^[a-z]+\d+i\./.test(i)), 'Intel types');
  });

  it('refuses any other value, naming what it accepts', () => {
    assert.throws(() => buildApp(newApp({ 'titus:architecture': 'aarch64' })), /titus:architecture is "aarch64"; expected one of arm64, x86_64/);
  });
});

describe('assets', () => {
  it('refuse to synthesize without the binaries unless placeholders are asked for', () => {
    assert.throws(
      () => buildApp(newApp({ 'titus:placeholderAssets': false })),
      /no-such-build\/titus-agent\/bootstrap does not exist.*cargo lambda build/s,
    );
  });
});

/** The stack synthesized with these context values over the tests' defaults. */
function templateWith(context: Record<string, unknown>): Template {
  return Template.fromStack(buildApp(newApp(context)).stack);
}

/** The agents' user data as text, each CloudFormation token written as <token>. */
function userDataOf(t: Template): string {
  const lt = Object.values(resources(t, 'AWS::EC2::LaunchTemplate'))[0] as any;
  const parts: unknown[] = lt.Properties.LaunchTemplateData.UserData['Fn::Base64']['Fn::Join'][1];
  return parts.map((p) => (typeof p === 'string' ? p : '<token>')).join('');
}

/** The default pool's parameter value, parsed, subnet ids as their logical ids. */
function defaultPoolOf(t: Template): any {
  const pool = Object.values(resources(t, 'AWS::SSM::Parameter')).find(
    (p: any) => p.Properties.Name === `/titus/${STAGE}/scaler/pools/default`,
  ) as any;
  const parts: unknown[] = pool.Properties.Value['Fn::Join'][1];
  return JSON.parse(parts.map((p: any) => (typeof p === 'string' ? p : p.Ref)).join(''));
}

const interfaceEndpointServices = (t: Template): string[] =>
  Object.values(resources(t, 'AWS::EC2::VPCEndpoint'))
    .filter((e: any) => e.Properties.VpcEndpointType === 'Interface')
    .map((e: any) => JSON.stringify(e.Properties.ServiceName).match(/\.([a-z.-]+)"\]\]\}$/)![1])
    .sort();

describe('VPC endpoints (titus:vpcEndpoints)', () => {
  const withEndpoints = templateWith({ 'titus:vpcEndpoints': true });

  it('are only the free gateway endpoints for DynamoDB and S3 unless asked for', () => {
    const endpoints = Object.values(resources(template, 'AWS::EC2::VPCEndpoint')) as any[];
    assert.deepEqual(endpoints.map((e) => e.Properties.VpcEndpointType), ['Gateway', 'Gateway']);
    const services = endpoints.map((e) => JSON.stringify(e.Properties.ServiceName));
    assert.ok(services.some((s) => s.includes('.dynamodb')) && services.some((s) => s.includes('.s3')), `${services}`);
    assert.deepEqual(interfaceEndpointServices(template), []);
    assert.throws(() => templateWith({ 'titus:vpcEndpoints': 'yes' }), /titus:vpcEndpoints is "yes"; expected true or false/);
  });

  it('when asked, reach every API the agents call, with private DNS, in the agents\' subnets', () => {
    assert.deepEqual(interfaceEndpointServices(withEndpoints), [
      'ecr.api', 'ecr.dkr', 'logs', 'secretsmanager', 'sqs', 'ssm', 'sts',
    ]);
    const gateways = Object.values(resources(withEndpoints, 'AWS::EC2::VPCEndpoint')).filter(
      (e: any) => e.Properties.VpcEndpointType === 'Gateway',
    );
    assert.equal(gateways.length, 2, 'and the DynamoDB and S3 gateway endpoints');
    const subnetIds = Object.keys(resources(withEndpoints, 'AWS::EC2::Subnet')).sort();
    for (const endpoint of Object.values(resources(withEndpoints, 'AWS::EC2::VPCEndpoint')) as any[]) {
      if (endpoint.Properties.VpcEndpointType !== 'Interface') continue;
      assert.equal(endpoint.Properties.PrivateDnsEnabled, true);
      assert.deepEqual(endpoint.Properties.SubnetIds.map((s: any) => s.Ref).sort(), subnetIds);
    }
  });

  it('admit HTTPS from the agents\' security group and nothing else', () => {
    const groups = resources(withEndpoints, 'AWS::EC2::SecurityGroup');
    const agentGroup = Object.keys(groups).find((id) => id.startsWith('AgentSecurityGroup'))!;
    const endpointGroup = Object.keys(groups).find((id) => id.startsWith('EndpointSecurityGroup'))!;
    assert.ok(agentGroup && endpointGroup);
    for (const endpoint of Object.values(resources(withEndpoints, 'AWS::EC2::VPCEndpoint')) as any[]) {
      if (endpoint.Properties.VpcEndpointType !== 'Interface') continue;
      assert.deepEqual(endpoint.Properties.SecurityGroupIds, [{ 'Fn::GetAtt': [endpointGroup, 'GroupId'] }]);
    }
    const inline = groups[endpointGroup].Properties.SecurityGroupIngress ?? [];
    const separate = Object.values(resources(withEndpoints, 'AWS::EC2::SecurityGroupIngress'))
      .map((r: any) => r.Properties)
      .filter((r: any) => JSON.stringify(r.GroupId).includes(endpointGroup));
    const rules = [...inline, ...separate];
    assert.equal(rules.length, 1, JSON.stringify(rules));
    assert.equal(rules[0].IpProtocol, 'tcp');
    assert.equal(rules[0].FromPort, 443);
    assert.equal(rules[0].ToPort, 443);
    assert.deepEqual(rules[0].SourceSecurityGroupId, { 'Fn::GetAtt': [agentGroup, 'GroupId'] });
    assert.equal(rules[0].CidrIp, undefined);
  });
});

describe('private subnets (titus:privateSubnets)', () => {
  const isPrivate = templateWith({ 'titus:privateSubnets': true, 'titus:vpcEndpoints': true });

  it('are public with public IPs by default', () => {
    const subnets = Object.values(resources(template, 'AWS::EC2::Subnet')) as any[];
    assert.ok(subnets.length >= 2);
    for (const subnet of subnets) assert.equal(subnet.Properties.MapPublicIpOnLaunch, true);
    template.resourceCountIs('AWS::EC2::InternetGateway', 1);
  });

  it('when asked, give agents no public IP and no route out, and the pool launches into them', () => {
    const subnets = resources(isPrivate, 'AWS::EC2::Subnet');
    assert.ok(Object.keys(subnets).length >= 2);
    for (const subnet of Object.values(subnets) as any[]) assert.equal(subnet.Properties.MapPublicIpOnLaunch, false);
    isPrivate.resourceCountIs('AWS::EC2::InternetGateway', 0);
    isPrivate.resourceCountIs('AWS::EC2::NatGateway', 0);
    for (const route of Object.values(resources(isPrivate, 'AWS::EC2::Route')) as any[]) {
      assert.notEqual(route.Properties.DestinationCidrBlock, '0.0.0.0/0', `no default route: ${JSON.stringify(route)}`);
    }
    assert.deepEqual(defaultPoolOf(isPrivate).subnet_ids.sort(), Object.keys(subnets).sort());
    const lt = Object.values(resources(isPrivate, 'AWS::EC2::LaunchTemplate'))[0] as any;
    const interfaces = lt.Properties.LaunchTemplateData.NetworkInterfaces ?? [];
    assert.ok(!interfaces.some((i: any) => i.AssociatePublicIpAddress === true), 'the template asks for no public IP');
  });

  it('are refused without the VPC endpoints the agents would need', () => {
    assert.throws(() => templateWith({ 'titus:privateSubnets': true }), /titus:privateSubnets=true needs titus:vpcEndpoints=true/);
  });
});

describe('the agent AMI (titus:agentAmi)', () => {
  it('is the latest Amazon Linux 2023 unless an AMI id is given, which is then used as is', () => {
    const imageOf = (t: Template) =>
      (Object.values(resources(t, 'AWS::EC2::LaunchTemplate'))[0] as any).Properties.LaunchTemplateData.ImageId;
    assert.ok(JSON.stringify(imageOf(template)).includes('SsmParameterValue'), JSON.stringify(imageOf(template)));
    const baked = templateWith({ 'titus:agentAmi': 'ami-0123456789abcdef0' });
    assert.equal(imageOf(baked), 'ami-0123456789abcdef0');
    const al2023 = Object.values(baked.toJSON().Parameters ?? {}).filter((p: any) => String(p.Default ?? '').includes('al2023-ami'));
    assert.deepEqual(al2023, [], 'no AL2023 lookup is left');
  });

  it('refuses a value that is not an AMI id', () => {
    assert.throws(() => templateWith({ 'titus:agentAmi': 'al2023' }), /titus:agentAmi is "al2023"; expected an AMI id/);
  });
});

describe('the agents\' user data', () => {
  const userData = userDataOf(template);
  const dockerSetup = DOCKER_SETUP_COMMANDS.join('\n');

  /** Runs the user data's Docker section with stub commands; returns what the stubs were asked. */
  function runDockerSetup(dockerInstalled: boolean): string[] {
    const start = userData.indexOf(dockerSetup);
    assert.ok(start >= 0, 'the user data sets up Docker');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'titus-userdata-'));
    const log = path.join(dir, 'calls');
    const stub = (name: string) =>
      fs.writeFileSync(path.join(dir, name), `#!/bin/sh\necho "${name} $*" >> "$CALLS"\n`, { mode: 0o755 });
    stub('dnf');
    stub('systemctl');
    if (dockerInstalled) stub('docker');
    // Only the stubs on PATH: a Docker on this machine must not count.
    const run = spawnSync('/bin/bash', ['-c', `set -euo pipefail\n${userData.slice(start, start + dockerSetup.length)}`], {
      env: { PATH: dir, CALLS: log },
      encoding: 'utf8',
    });
    assert.equal(run.status, 0, run.stderr);
    return fs.existsSync(log) ? fs.readFileSync(log, 'utf8').trim().split('\n') : [];
  }

  it('installs Docker from the AL2023 repositories when the AMI has none, then starts it', () => {
    assert.deepEqual(runDockerSetup(false), ['dnf install -y docker', 'systemctl enable --now docker']);
  });

  it('skips the install when docker is already there (a baked AMI)', () => {
    assert.deepEqual(runDockerSetup(true), ['systemctl enable --now docker']);
    const baked = userDataOf(templateWith({ 'titus:agentAmi': 'ami-0123456789abcdef0' }));
    assert.ok(baked.includes(dockerSetup), 'the same user data on a baked AMI');
  });

  it('needs no internet: the agent binary comes from the bucket\'s regional endpoint', () => {
    assert.match(userData, /aws s3 cp 's3:\/\/<token>\/[^']+' '\/usr\/local\/bin\/titus-agent' --region <token>/);
    assert.ok(!/https?:\/\/(?!169\.254\.169\.254)/.test(userData), 'no URL but instance metadata');
  });
});
