/**
 * Writes the JSON Schema of saved plans (src/engine/plan.schema.json) from the zod schema the
 * code reads plans with, so the two cannot drift: `npm run plan-schema`. A test checks the
 * committed file is what this makes.
 */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { zodToJsonSchema } from 'zod-to-json-schema';
import { planValueSchema } from '../../src/engine/plan-value.js';

export const SCHEMA_FILE = fileURLToPath(new URL('../../src/engine/plan.schema.json', import.meta.url));

export function planJsonSchema(): string {
  const schema = zodToJsonSchema(planValueSchema, { name: 'HostsmithPlan', $refStrategy: 'none' });
  const out = {
    $id: 'https://hostsmith.invalid/plan.schema.json',
    title: 'hostsmith saved plan (plan --out), format version 1',
    ...schema,
  };
  return JSON.stringify(out, null, 2) + '\n';
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  writeFileSync(SCHEMA_FILE, planJsonSchema());
  process.stdout.write(`wrote ${SCHEMA_FILE}\n`);
}
