// One synthesized stack per test process, for stage "ci", with placeholders for the binaries.

import * as path from 'path';

import * as cdk from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';

import { buildApp } from '../bin/titus';
import { TitusStack } from '../lib/titus-stack';

export const STAGE = 'ci';

export function newApp(context: Record<string, unknown> = {}): cdk.App {
  return new cdk.App({
    context: {
      'titus:stage': STAGE,
      'titus:placeholderAssets': true,
      'titus:assetDir': path.join(__dirname, 'no-such-build'),
      ...context,
    },
  });
}

let built: { stack: TitusStack; template: Template } | undefined;

export function synthesized(): { stack: TitusStack; template: Template } {
  if (!built) {
    const { stack } = buildApp(newApp());
    built = { stack, template: Template.fromStack(stack) };
  }
  return built;
}

/** Every resource of a type, by logical id. */
export function resources(template: Template, type: string): Record<string, any> {
  return template.findResources(type);
}

/** Every IAM policy statement attached to the role with this logical-id prefix. */
export function statementsOfRole(template: Template, rolePrefix: string): any[] {
  const policies = template.findResources('AWS::IAM::Policy');
  return Object.values(policies)
    .filter((p: any) => (p.Properties.Roles ?? []).some((r: any) => (r.Ref ?? '').startsWith(rolePrefix)))
    .flatMap((p: any) => p.Properties.PolicyDocument.Statement);
}

export function actionsOf(statements: any[]): string[] {
  return statements.flatMap((s) => (Array.isArray(s.Action) ? s.Action : [s.Action]));
}
