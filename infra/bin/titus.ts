// The CDK app: one Titus stage per stack, checked by cdk-nag's AwsSolutions rules.
//
// Context (cdk.json, or -c key=value):
//   titus:stage              the stage (resource names carry it), default "prod"
//   titus:assetDir           where the built binaries are (<dir>/<binary>/bootstrap); default
//                            $CARGO_TARGET_DIR/lambda, else ../target/lambda
//   titus:placeholderAssets  true: synthesize with placeholders for missing binaries (never deploy)
//   titus:retainData         false: tables are deleted with the stack (throwaway stages)
//   titus:parameters         a JSON file of parameter values by name suffix, over the defaults
//   titus:alarmEmail         an address subscribed to the alarm topic
//   titus:architecture       arm64 (default) or x86_64: the Lambdas, the agent AMI and the
//                            default pool's instance types; the binaries must be built for it
//   titus:vpcEndpoints       true: interface VPC endpoints for the APIs the agents call
//   titus:privateSubnets     true: agents in private subnets, no public IP (needs vpcEndpoints)
//   titus:agentAmi           an AMI id for the agents instead of the latest Amazon Linux 2023

import * as fs from 'fs';
import * as path from 'path';

import * as cdk from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';

import { loadDefinitions } from '../lib/definitions';
import { parseAgentAmi, parseArchitecture, TitusStack } from '../lib/titus-stack';

export function defaultAssetDir(): string {
  const target = process.env.CARGO_TARGET_DIR ?? path.join(__dirname, '..', '..', 'target');
  return path.join(target, 'lambda');
}

function flag(app: cdk.App, key: string, fallback: boolean): boolean {
  const value = app.node.tryGetContext(key);
  if (value === undefined) return fallback;
  return value === true || value === 'true';
}

/** A context value that must be a boolean (or its string, as `-c key=value` passes it). */
function strictFlag(app: cdk.App, key: string, fallback: boolean): boolean {
  const value = app.node.tryGetContext(key);
  if (value === undefined) return fallback;
  if (value === true || value === 'true') return true;
  if (value === false || value === 'false') return false;
  throw new Error(`${key} is ${JSON.stringify(value)}; expected true or false (default ${fallback})`);
}

export function buildApp(app: cdk.App = new cdk.App()): { app: cdk.App; stack: TitusStack } {
  const stage = String(app.node.tryGetContext('titus:stage') ?? 'prod');
  const overridesFile = app.node.tryGetContext('titus:parameters') as string | undefined;
  const stack = new TitusStack(app, `Titus-${stage}`, {
    stackName: `titus-${stage}`,
    description: `Titus container platform, stage ${stage}`,
    stage,
    definitions: loadDefinitions(stage),
    assetDir: String(app.node.tryGetContext('titus:assetDir') ?? defaultAssetDir()),
    placeholderAssets: flag(app, 'titus:placeholderAssets', false),
    retainData: flag(app, 'titus:retainData', true),
    parameterOverrides: overridesFile ? JSON.parse(fs.readFileSync(overridesFile, 'utf8')) : undefined,
    alarmEmail: app.node.tryGetContext('titus:alarmEmail') as string | undefined,
    architecture: parseArchitecture(app.node.tryGetContext('titus:architecture')),
    vpcEndpoints: strictFlag(app, 'titus:vpcEndpoints', false),
    privateSubnets: strictFlag(app, 'titus:privateSubnets', false),
    agentAmi: parseAgentAmi(app.node.tryGetContext('titus:agentAmi')),
  });
  cdk.Aspects.of(app).add(new AwsSolutionsChecks({ verbose: true }));
  return { app, stack };
}

if (require.main === module) {
  buildApp().app.synth();
}
