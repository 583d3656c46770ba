// cdk-nag's AwsSolutions rules: no finding is left, and every suppression says why.

import * as assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { Annotations, Match } from 'aws-cdk-lib/assertions';

import { buildApp } from '../bin/titus';
import { newApp, synthesized } from './helpers';

const { stack, template } = synthesized();

describe('cdk-nag AwsSolutions', () => {
  it('reports no error', () => {
    const errors = Annotations.fromStack(stack).findError('*', Match.stringLikeRegexp('AwsSolutions-.*'));
    assert.deepEqual(
      errors.map((e) => `${e.id}: ${String(e.entry.data).split(':')[0]}`),
      [],
    );
  });

  it('reports no warning', () => {
    const warnings = Annotations.fromStack(stack).findWarning('*', Match.stringLikeRegexp('AwsSolutions-.*'));
    assert.deepEqual(
      warnings.map((w) => `${w.id}: ${String(w.entry.data).split(':')[0]}`),
      [],
    );
  });

  it('suppresses a rule only with a reason of substance', () => {
    const suppressions: { id: string; reason: string }[] = [];
    for (const resource of Object.values(template.toJSON().Resources) as any[]) {
      suppressions.push(...(resource.Metadata?.cdk_nag?.rules_to_suppress ?? []));
    }
    const stackLevel = (stack.templateOptions.metadata?.cdk_nag?.rules_to_suppress ?? []) as any[];
    suppressions.push(...stackLevel);
    assert.ok(suppressions.length > 0);
    for (const s of suppressions) {
      assert.ok(s.reason && s.reason.length >= 40, `${s.id} is suppressed with too short a reason: ${s.reason}`);
    }
    const rules = new Set(suppressions.map((s) => s.id));
    // Only the reviewed rules are suppressed at all.
    assert.deepEqual([...rules].sort(), ['AwsSolutions-IAM5', 'AwsSolutions-SF1', 'AwsSolutions-SNS2', 'AwsSolutions-SQS3']);
  });
});

describe('cdk-nag AwsSolutions with private agents (VPC endpoints, private subnets, a baked AMI)', () => {
  const { stack: privateStack } = buildApp(
    newApp({ 'titus:vpcEndpoints': true, 'titus:privateSubnets': true, 'titus:agentAmi': 'ami-0123456789abcdef0' }),
  );

  it('reports no error and no warning', () => {
    const annotations = Annotations.fromStack(privateStack);
    const findings = [
      ...annotations.findError('*', Match.stringLikeRegexp('AwsSolutions-.*')),
      ...annotations.findWarning('*', Match.stringLikeRegexp('AwsSolutions-.*')),
    ];
    assert.deepEqual(
      findings.map((f) => `${f.id}: ${String(f.entry.data).split(':')[0]}`),
      [],
    );
  });
});

describe('the check itself', () => {
  it('finds a violation when there is one', () => {
    const cdk = require('aws-cdk-lib');
    const sqs = require('aws-cdk-lib/aws-sqs');
    const { AwsSolutionsChecks } = require('cdk-nag');
    const app = new cdk.App();
    const bad = new cdk.Stack(app, 'Bad');
    new sqs.Queue(bad, 'PlainQueue');
    cdk.Aspects.of(app).add(new AwsSolutionsChecks());
    const errors = Annotations.fromStack(bad).findError('*', Match.stringLikeRegexp('AwsSolutions-SQS4'));
    assert.ok(errors.length > 0);
  });
});
