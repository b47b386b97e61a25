import { readFileSync } from 'node:fs';
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import type { PlannedStep } from '../../src/engine/plan-step.js';
import { planValueSchema, staleSteps, stepDifference, varDigest, type PlanHost, type PlanStepValue, type PlanValue } from '../../src/engine/plan-value.js';
import type { StepSpec } from '../../src/recipe/types.js';
import { SCHEMA_FILE, planJsonSchema } from '../tools/plan-schema.js';

const spec = (name: string): StepSpec => ({ name, type: 'file', params: {}, fatal: true, needs: [], notify: [], loc: { file: 'r.yml', line: 1, col: 1 }, dir: '.' }) as StepSpec;

const now = (name: string, o: Partial<PlannedStep> = {}): PlannedStep => ({
  spec: spec(name),
  status: 'planned',
  summary: `create /etc/${name}`,
  irreversible: false,
  paramsDigest: 'sha256:p',
  pre: 'pre-1',
  ...o,
});

const saved = (name: string, o: Partial<PlanStepValue> = {}): PlanStepValue => ({
  name,
  type: 'file',
  status: 'planned',
  summary: `create /etc/${name}`,
  irreversible: false,
  paramsDigest: 'sha256:p',
  pre: 'pre-1',
  dynamic: false,
  ...o,
});

describe('stepDifference: is the step as checked now the step the plan showed?', () => {
  const rows: Array<[string, PlanStepValue | undefined, PlannedStep, boolean, RegExp | undefined]> = [
    ['same state, same status', saved('a'), now('a'), false, undefined],
    ['state moved (pre differs)', saved('a'), now('a', { pre: 'pre-2' }), false, /state moved/],
    ['planned, now already done', saved('a'), now('a', { status: 'unchanged', summary: 'up to date', pre: 'pre-2' }), false, /showed it planned.*is now unchanged/],
    ['unchanged, now would change', saved('a', { status: 'unchanged' }), now('a', { pre: 'pre-2' }), false, /showed it unchanged.*would now/],
    ['skipped, now would change', saved('a', { status: 'skipped', pre: undefined }), now('a'), false, /showed it skipped/],
    ['params differ (facts changed)', saved('a'), now('a', { paramsDigest: 'sha256:q' }), false, /parameters differ/],
    ['check fails now', saved('a'), now('a', { status: 'failed', error: 'boom' }), false, /cannot be checked now: boom/],
    ['not in the plan but would change', undefined, now('a'), false, /not in the plan/],
    ['not in the plan and unchanged', undefined, now('a', { status: 'unchanged' }), false, undefined],
    ['dynamic: not judged up front', saved('a', { dynamic: true, pre: undefined, status: 'unchanged' }), now('a', { pre: 'x' }), false, undefined],
    ['dynamic planned: may apply at its turn', saved('a', { dynamic: true, pre: undefined }), now('a', { pre: 'x' }), true, undefined],
    ['dynamic unchanged: may not apply at its turn', saved('a', { dynamic: true, pre: undefined, status: 'unchanged' }), now('a', { pre: 'x' }), true, /showed it unchanged/],
    ['at its turn, state moved', saved('a'), now('a', { pre: 'pre-2' }), true, /state moved/],
  ];
  it.each(rows)('%s', (_name, expected, fresh, atTurn, want) => {
    const why = stepDifference(expected, fresh, atTurn);
    if (want) expect(why).toMatch(want);
    else expect(why).toBeUndefined();
  });

  it('lists every stale step of a host, and planned steps that are no longer reached', () => {
    const host: PlanHost = { target: {}, vars: {}, status: 'ok', steps: [saved('a'), saved('b'), saved('c', { handler: true })] };
    const lines = staleSteps(host, [now('a', { pre: 'moved' }), now('b')]);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^step "a": its state moved/);
    expect(lines[1]).toMatch(/^step "c": .*no longer reached/);
    expect(staleSteps(host, [now('a'), now('b'), now('c')])).toEqual([]);
  });
});

describe('the plan file format', () => {
  it('the shipped JSON Schema is the one made from the schema plans are read with', () => {
    expect(readFileSync(SCHEMA_FILE, 'utf8')).toBe(planJsonSchema());
  });

  const example: PlanValue = {
    format: 'hostsmith-plan',
    version: 1,
    hostsmith: '0.1.0',
    createdAt: '2026-12-01T00:00:00.000Z',
    runId: 'r1',
    recipe: { name: 'demo', file: '/r.yml', sha256: 'sha256:0' },
    sources: { '/templates/a.hbs': 'sha256:1' },
    salt: 'abc',
    vars: { cli: { msg: 'hi' }, file: {}, secret: ['pw'] },
    options: { hosts: 'h1' },
    status: 'ok',
    exitCode: 0,
    hosts: { h1: { target: { host: '127.0.0.2', port: 22 }, vars: { msg: varDigest('abc', 'msg', 'hi') }, status: 'ok', steps: [saved('a')] } },
  };

  it('accepts a plan in both the zod schema and the JSON Schema, and refuses the same damage in both', () => {
    const ajv = new Ajv({ strict: false });
    const validate = ajv.compile(JSON.parse(readFileSync(SCHEMA_FILE, 'utf8')));
    expect(validate(example)).toBe(true);
    expect(planValueSchema.safeParse(example).success).toBe(true);
    const damaged = { ...example, hosts: { h1: { ...example.hosts.h1!, steps: [{ ...saved('a'), status: 'done' }] } } };
    expect(validate(damaged)).toBe(false);
    expect(planValueSchema.safeParse(damaged).success).toBe(false);
    const extra = { ...example, surprise: 1 };
    expect(validate(extra)).toBe(false);
    expect(planValueSchema.safeParse(extra).success).toBe(false);
  });

  it('var digests are salted: the same value gives another digest under another salt', () => {
    expect(varDigest('s1', 'pw', 'x')).not.toBe(varDigest('s2', 'pw', 'x'));
    expect(varDigest('s1', 'pw', 'x')).toBe(varDigest('s1', 'pw', 'x'));
    expect(varDigest('s1', 'pw', 'x')).not.toContain('x'.repeat(2));
  });
});
