/**
 * A plan as a value (SPEC §8): what `plan --out` writes, what `apply --plan` carries out, and what
 * a terminal `apply` confirms and then follows. One staleness rule lives here: a step whose
 * state moved since it was planned, or that would now do something the plan did not show.
 */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { sha256 } from '../steps/step.js';
import type { HostStatus, RunStatus } from './events.js';
import type { PlannedStep } from './plan-step.js';

export const PLAN_FORMAT = 'hostsmith-plan';
export const PLAN_VERSION = 1;

const stepValue = z
  .object({
    name: z.string(),
    type: z.string(),
    status: z.enum(['planned', 'unchanged', 'skipped', 'failed']),
    summary: z.string(),
    diff: z.string().optional(),
    irreversible: z.boolean(),
    paramsDigest: z.string().optional(),
    pre: z.string().optional(),
    dynamic: z.boolean(),
    dependsOn: z.array(z.string()).optional(),
    handler: z.boolean().optional(),
    error: z.string().optional(),
  })
  .strict();

const hostValue = z
  .object({
    target: z.record(z.unknown()),
    vars: z.record(z.string()),
    status: z.string(),
    error: z.string().optional(),
    steps: z.array(stepValue),
  })
  .strict();

export const planValueSchema = z
  .object({
    format: z.literal(PLAN_FORMAT),
    version: z.number().int(),
    hostsmith: z.string(),
    createdAt: z.string(),
    runId: z.string(),
    recipe: z.object({ name: z.string(), file: z.string(), sha256: z.string() }).strict(),
    sources: z.record(z.string()),
    salt: z.string(),
    vars: z.object({ cli: z.record(z.string()), file: z.record(z.unknown()), secret: z.array(z.string()) }).strict(),
    options: z.record(z.unknown()),
    status: z.string(),
    exitCode: z.number().int(),
    hosts: z.record(hostValue),
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
  return Object.fromEntries(Object.keys(vars).sort().map((k) => [k, varDigest(salt, k, vars[k])]));
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
    const why = stepDifference(expected.steps.find((s) => s.name === p.spec.name), p, false);
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
