// The tables, queues and SSM parameters Titus uses, as the Rust code declares them
// (`titus-provision --print-definitions`, checked in as definitions.json). The CDK app builds its
// resources from these, so the deployment cannot drift from what the code expects; test.sh checks
// that definitions.json is current.

import * as fs from 'fs';
import * as path from 'path';

export interface KeyDef {
  partitionKey: string;
  sortKey?: string;
}

export interface IndexDef extends KeyDef {
  name: string;
}

export interface TableDef extends KeyDef {
  role: string;
  name: string;
  globalSecondaryIndexes: IndexDef[];
  ttlAttribute?: string;
  /** A DynamoDB stream of new and old images: the table's changes become events. */
  stream?: boolean;
  /** Lambda event filter patterns (any one matching) for the stream's records; none: every record. */
  streamFilters?: Record<string, unknown>[];
}

export interface DeadLetterDef {
  name: string;
  maxReceiveCount: number;
}

export interface QueueDef {
  role: string;
  name: string;
  visibilityTimeoutSecs: number;
  messageRetentionSecs: number;
  deadLetter?: DeadLetterDef;
}

export interface ParameterDef {
  name: string;
  description: string;
  defaultValue: string;
}

export interface Definitions {
  stage: string;
  tables: TableDef[];
  queues: QueueDef[];
  parameters: ParameterDef[];
}

export const DEFINITIONS_FILE = path.join(__dirname, '..', 'definitions.json');

/** A stage name as the Rust code accepts it (`Names::new`). */
export function checkStage(stage: string): string {
  if (!/^[a-z0-9-]{1,16}$/.test(stage)) {
    throw new Error(
      `stage ${JSON.stringify(stage)} is not valid: expected 1 to 16 lowercase letters, digits or hyphens`,
    );
  }
  return stage;
}

/** Renames every resource of `defs` from its stage to `stage`: names carry the stage as
 * `titus-{stage}-...` and `/titus/{stage}/...`, and so do values that name resources (the
 * default pool's launch template). */
export function forStage(defs: Definitions, stage: string): Definitions {
  checkStage(stage);
  const from = defs.stage;
  const rename = (text: string): string =>
    text.split(`titus-${from}-`).join(`titus-${stage}-`).split(`/titus/${from}/`).join(`/titus/${stage}/`);
  return {
    stage,
    tables: defs.tables.map((t) => ({ ...t, name: rename(t.name) })),
    queues: defs.queues.map((q) => ({
      ...q,
      name: rename(q.name),
      deadLetter: q.deadLetter ? { ...q.deadLetter, name: rename(q.deadLetter.name) } : undefined,
    })),
    parameters: defs.parameters.map((p) => ({
      ...p,
      name: rename(p.name),
      defaultValue: rename(p.defaultValue),
    })),
  };
}

/** The checked-in definitions, renamed for `stage`. */
export function loadDefinitions(stage: string, file: string = DEFINITIONS_FILE): Definitions {
  const defs = JSON.parse(fs.readFileSync(file, 'utf8')) as Definitions;
  return forStage(defs, stage);
}

/** The parameter whose name ends with `suffix` (e.g. `/scaler/pools/default`). */
export function parameter(defs: Definitions, suffix: string): ParameterDef {
  const found = defs.parameters.find((p) => p.name === `/titus/${defs.stage}${suffix}`);
  if (!found) {
    throw new Error(`definitions.json has no parameter /titus/${defs.stage}${suffix}; run infra/test.sh --update-definitions`);
  }
  return found;
}
