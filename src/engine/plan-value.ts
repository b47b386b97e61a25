/**
 * A plan as a value (SPEC §8): what `plan --out` writes, what `apply --plan` carries out, and what
 * a terminal `apply` confirms and then follows. One staleness rule lives here: a step whose
 * state moved since it was planned, or that would now do something the plan did not show.
 */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { sha256 } from '../steps/step.js';
import type { HostStatus, RunStatus } from './events.js';
import type { PlannedStep } from './planned-step.js';

export const PLAN_FORMAT = 'hostsmith-plan';
export const PLAN_VERSION = 1;

const digest = z.string().describe('sha256:<hex>');

const stepValue = z
  .object({
    name: z.string().describe("the step's name (included steps: <recipe>/<step>)"),
    type: z.string().describe('the step type: command, file, template, package, cron, service, line, user, group'),
    status: z.enum(['planned', 'unchanged', 'skipped', 'failed']).describe('planned = would change'),
    summary: z.string().describe('one line: what would change (secrets as ***)'),
    diff: z.string().optional().describe('unified diff of what would change, when the step has content'),
    irreversible: z.boolean().describe('the change has no way back (a command without rollback)'),
    paramsDigest: digest.optional().describe('salted digest of the rendered params'),
    pre: z.string().optional().describe('fingerprint of the state the check read; absent for dynamic and skipped steps'),
    dynamic: z.boolean().describe('depends on an earlier step that would change: known after apply'),
    dependsOn: z.array(z.string()).optional().describe('the earlier steps a dynamic step depends on'),
    handler: z.boolean().optional().describe('a handler, planned because a changing step notifies it'),
    error: z.string().optional().describe('why the step could not be planned'),
  })
  .strict();

const hostValue = z
  .object({
    target: z.record(z.unknown()).describe('how the host was reached: kind, host, port, user (no keys)'),
    vars: z.record(digest).describe('var name → salted digest of the value this host was planned with (secrets too, never values)'),
    status: z.string().describe('the host status of the plan run: ok, failed, unreachable…'),
    error: z.string().optional(),
    steps: z.array(stepValue).describe('every step in the order it was planned, handlers last'),
  })
  .strict();

export const planValueSchema = z
  .object({
    format: z.literal(PLAN_FORMAT),
    version: z.number().int().describe('the plan format version'),
    hostsmith: z.string().describe('the hostsmith version that made the plan; apply --plan needs the same'),
    createdAt: z.string().describe('ISO 8601 time the plan was made'),
    runId: z.string().describe('the id of the plan run'),
    recipe: z.object({ name: z.string(), file: z.string(), sha256: digest }).strict().describe('the recipe file and its digest'),
    sources: z.record(digest).describe('absolute path → digest of every included recipe and template/file source'),
    salt: z.string().describe('random salt of the digests in this plan'),
    vars: z
      .object({
        cli: z.record(z.string()).describe('non-secret --var values given when planning'),
        file: z.record(z.unknown()).describe('non-secret --vars-file values given when planning'),
        secret: z.array(z.string()).describe('names of secret vars: give them again to apply'),
      })
      .strict(),
    options: z.record(z.unknown()).describe('target options used when planning (hosts, inventory, knownHosts, identity, sudo…)'),
    status: z.string().describe('the worst host status of the plan run'),
    exitCode: z.number().int().describe("the plan run's exit code; only a plan with 0 can be applied"),
    hosts: z.record(hostValue).describe('per host name'),
  })
  .strict();

export type PlanStepValue = z.infer<typeof stepValue>;
export type PlanHost = z.infer<typeof hostValue>;
export type PlanValue = z.infer<typeof planValueSchema>;

export function newSalt(): string {
  return randomBytes(16).toString('hex');
}

/** Salted, so a plan file does not give away a guessable value by its digest. */
export function varDigest(salt: string, name: string, value: unknown): string {
  return `sha256:${sha256(`${salt}\n${name}\n${JSON.stringify(value ?? null)}`)}`;
}

export function varDigests(salt: string, vars: Record<string, unknown>): Record<string, string> {
  return Object.fromEntries(
    Object.keys(vars)
      .sort()
      .map((k) => [k, varDigest(salt, k, vars[k])]),
  );
}

export function stepValueOf(p: PlannedStep, handler: boolean): PlanStepValue {
  return {
    name: p.spec.name,
    type: p.spec.type,
    status: p.status,
    summary: p.summary,
    ...(p.diff ? { diff: p.diff } : {}),
    irreversible: p.irreversible,
    ...(p.paramsDigest ? { paramsDigest: p.paramsDigest } : {}),
    ...(p.pre && !p.dependsOn?.length ? { pre: p.pre } : {}),
    dynamic: Boolean(p.dependsOn?.length),
    ...(p.dependsOn?.length ? { dependsOn: p.dependsOn } : {}),
    ...(handler ? { handler: true } : {}),
    ...(p.error ? { error: p.error } : {}),
  };
}

/**
 * Why a step as checked now is not the step the plan showed, or undefined when it is.
 * `atTurn`: checked at its turn during apply, after the steps before it ran (dynamic steps are
 * judged only there); otherwise checked up front, before anything is changed.
 */
export function stepDifference(expected: PlanStepValue | undefined, now: PlannedStep, atTurn: boolean): string | undefined {
  const what = now.status === 'planned' ? `would now: ${now.summary}` : `is now ${now.status}: ${now.summary}`;
  if (!expected) return now.status === 'planned' ? `not in the plan, but ${what}` : undefined;
  if (now.status === 'failed') return `cannot be checked now: ${now.error ?? now.summary}`;
  if (expected.dynamic) {
    if (!atTurn) return undefined;
    if (now.status === 'planned' && expected.status !== 'planned') return `the plan showed it ${expected.status}, but it ${what}`;
    return undefined;
  }
  if (now.dependsOn?.length && now.status === 'planned' && !atTurn) return undefined;
  if (expected.paramsDigest !== undefined && now.paramsDigest !== undefined && expected.paramsDigest !== now.paramsDigest) {
    return `its parameters differ from the plan's (the host's facts changed?)`;
  }
  if (expected.status !== now.status) {
    return `the plan showed it ${expected.status} (${expected.summary}), but it ${what}`;
  }
  if (expected.pre !== undefined && now.pre !== undefined && expected.pre !== now.pre) {
    return `its state moved since the plan was made (planned: ${expected.summary}; it ${what})`;
  }
  return undefined;
}

/** Every difference between a host's plan and what its steps are now, as "step: why" lines. */
export function staleSteps(expected: PlanHost, now: PlannedStep[]): string[] {
  const out: string[] = [];
  const seen = new Set<string>();
  for (const p of now) {
    seen.add(p.spec.name);
    const why = stepDifference(
      expected.steps.find((s) => s.name === p.spec.name),
      p,
      false,
    );
    if (why) out.push(`step "${p.spec.name}": ${why}`);
  }
  for (const s of expected.steps) {
    if (!seen.has(s.name) && s.status === 'planned') out.push(`step "${s.name}": the plan would change it, but it is no longer reached (an earlier step or handler changed)`);
  }
  return out;
}

export interface PlanHostReport {
  status: HostStatus;
  error?: string;
  steps: PlanStepValue[];
}

export type { RunStatus };
