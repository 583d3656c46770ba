// The tables and queues of the synthesized template against the Rust definitions
// (definitions.json, and when test.sh passes it, `titus-provision --print-definitions` itself).

import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { describe, it } from 'node:test';

import { Definitions, forStage, loadDefinitions } from '../lib/definitions';
import { resources, STAGE, synthesized } from './helpers';

const { template } = synthesized();
const defs = loadDefinitions(STAGE);

describe('definitions.json', () => {
  it('is what the Rust code declares for the stage', (t) => {
    const file = process.env.TITUS_RUST_DEFINITIONS;
    if (!file) {
      t.skip('TITUS_RUST_DEFINITIONS is not set (infra/test.sh sets it from titus-provision)');
      return;
    }
    const rust = JSON.parse(fs.readFileSync(file, 'utf8')) as Definitions;
    assert.equal(rust.stage, STAGE);
    assert.deepEqual(
      JSON.parse(JSON.stringify(defs)),
      rust,
      'definitions.json is stale: run infra/test.sh --update-definitions',
    );
  });

  it('renames every resource for another stage', () => {
    const other = forStage(defs, 'other');
    assert.ok(other.tables.every((t) => t.name.startsWith('titus-other-')));
    assert.ok(other.queues.every((q) => q.name.startsWith('titus-other-') && (!q.deadLetter || q.deadLetter.name.startsWith('titus-other-'))));
    assert.ok(other.parameters.every((p) => p.name.startsWith('/titus/other/')));
    assert.ok(!JSON.stringify(other).includes(`titus-${STAGE}-`));
    assert.throws(() => forStage(defs, 'Bad Stage'), /not valid/);
  });
});

describe('tables', () => {
  const tables = Object.values(resources(template, 'AWS::DynamoDB::Table')).map((t: any) => t.Properties);

  it('are exactly the declared ones', () => {
    assert.deepEqual(tables.map((t) => t.TableName).sort(), defs.tables.map((t) => t.name).sort());
  });

  for (const def of defs.tables) {
    it(`${def.name} has the declared keys, indexes, TTL and stream, on demand with PITR`, () => {
      const table = tables.find((t) => t.TableName === def.name);
      const key = (k: { partitionKey: string; sortKey?: string }) => [
        { AttributeName: k.partitionKey, KeyType: 'HASH' },
        ...(k.sortKey ? [{ AttributeName: k.sortKey, KeyType: 'RANGE' }] : []),
      ];
      assert.deepEqual(table.KeySchema, key(def));
      assert.equal(table.BillingMode, 'PAY_PER_REQUEST');
      assert.deepEqual(table.PointInTimeRecoverySpecification, { PointInTimeRecoveryEnabled: true });
      const indexes = (table.GlobalSecondaryIndexes ?? []).map((i: any) => ({
        name: i.IndexName,
        key: i.KeySchema,
        projection: i.Projection.ProjectionType,
      }));
      assert.deepEqual(
        indexes.sort((a: any, b: any) => a.name.localeCompare(b.name)),
        def.globalSecondaryIndexes
          .map((i) => ({ name: i.name, key: key(i), projection: 'ALL' }))
          .sort((a, b) => a.name.localeCompare(b.name)),
      );
      const keyAttributes = new Set(
        [def, ...def.globalSecondaryIndexes].flatMap((k) => [k.partitionKey, ...(k.sortKey ? [k.sortKey] : [])]),
      );
      assert.deepEqual(
        table.AttributeDefinitions.map((a: any) => `${a.AttributeName}:${a.AttributeType}`).sort(),
        [...keyAttributes].map((a) => `${a}:S`).sort(),
      );
      if (def.ttlAttribute) {
        assert.deepEqual(table.TimeToLiveSpecification, { AttributeName: def.ttlAttribute, Enabled: true });
      } else {
        assert.equal(table.TimeToLiveSpecification, undefined);
      }
      if (def.stream) {
        assert.deepEqual(table.StreamSpecification, { StreamViewType: 'NEW_AND_OLD_IMAGES' });
      } else {
        assert.equal(table.StreamSpecification, undefined);
      }
    });
  }
});

describe('queues', () => {
  const queues = resources(template, 'AWS::SQS::Queue');
  const byName = new Map(Object.entries(queues).map(([id, q]: [string, any]) => [q.Properties.QueueName, { id, ...q.Properties }]));

  it('are exactly the declared ones and their dead-letter queues, and the events function\'s DLQ', () => {
    const declared = defs.queues.flatMap((q) => [q.name, ...(q.deadLetter ? [q.deadLetter.name] : [])]);
    // The event feed's DLQ belongs to the deployment, not the Rust code (an event source's
    // on-failure destination): it is not in definitions.json.
    assert.deepEqual([...byName.keys()].sort(), [...declared, `titus-${STAGE}-events-dlq`].sort());
  });

  for (const def of defs.queues) {
    it(`${def.name} has the declared timeouts and redrive`, () => {
      const queue = byName.get(def.name);
      assert.equal(queue.VisibilityTimeout, def.visibilityTimeoutSecs);
      assert.equal(queue.MessageRetentionPeriod, def.messageRetentionSecs);
      if (def.deadLetter) {
        const dlq = byName.get(def.deadLetter.name);
        assert.deepEqual(queue.RedrivePolicy, {
          deadLetterTargetArn: { 'Fn::GetAtt': [dlq.id, 'Arn'] },
          maxReceiveCount: def.deadLetter.maxReceiveCount,
        });
      } else {
        assert.equal(queue.RedrivePolicy, undefined);
      }
    });
  }
});
