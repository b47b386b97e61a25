/**
 * Planning one step on one host: when → render → unless → check → plan, into a PlannedStep value.
 * Reads only. The same function serves a dry run, the re-check of a saved plan, and each step's
 * turn during apply, so there is one way to decide what a step would do.
 */
import { ConnectError, HostsmithError, StepError, errorMessage } from '../errors.js';
import { render, renderDeep } from '../render/template.js';
import type { StepSpec } from '../recipe/types.js';
import { stepType } from '../steps/registry.js';
import { isGuarded, stateFingerprint, sha256, type Plan, type StepContext, type StepType } from '../steps/step.js';
import { KNOWN_AFTER_APPLY, contextFor, scopeFor, type HostRun } from './host-run.js';
import { ANYTHING, meets, widen } from '../steps/footprint.js';
import { prefetch, readFromBatch, readLive } from './probe.js';

export type { PlannedStatus, PlannedStep } from './planned-step.js';
import type { PlannedStep } from './planned-step.js';

const HIDDEN_DIFF = '(diff hidden: the content holds secret values)\n';

function falsy(s: string): boolean {
  const t = s.trim().toLowerCase();
  return t === '' || t === 'false' || t === '0';
}

/** Any string in the value holding a NUL byte: no shell command or file name can carry one. */
function nulPath(v: unknown, path: string): string | undefined {
  if (typeof v === 'string') return v.includes('\0') ? path : undefined;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const p = nulPath(v[i], `${path}[${i}]`);
      if (p) return p;
    }
  } else if (v && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      const p = nulPath(x, `${path}.${k}`);
      if (p) return p;
    }
  }
  return undefined;
}

function refuseNul(value: unknown, field: string): void {
  const at = nulPath(value, field);
  if (at) throw new StepError(`${at} holds a NUL byte after rendering (from a var or an earlier step's output?); nothing was sent to the host`);
}

export function paramsDigest(salt: string, params: unknown): string {
  return `sha256:${sha256(`${salt}\n${JSON.stringify(params ?? null)}`)}`;
}

/**
 * Plans one step. A step that cannot be planned is `failed` with its error (a lost connection is
 * thrown, not returned: the host is gone, not the step).
 */
export async function planStep(h: HostRun, spec: StepSpec): Promise<PlannedStep> {
  // Its reads, and those of the steps after it, in one round trip (probe.ts).
  await prefetch(h, spec, planStep, readsOf);
  const batched = h.o.mode === 'apply' && readFromBatch(h, spec);
  const changing = h.changing.length;
  const p = await planOnce(h, spec);
  // A guarded type holds the host to what it was planned from in the very exec that changes it.
  if (!batched || p.status !== 'planned' || !p.work || isGuarded(p.work.type, p.work.params)) return p;
  // It will change the host: read it again at its turn, so a change made since the batch is seen.
  h.changing.length = changing;
  readLive(h, spec);
  return planOnce(h, spec);
}

async function planOnce(h: HostRun, spec: StepSpec): Promise<PlannedStep> {
  h.touched.clear();
  const type = stepType(spec.type);
  if (!type) throw new HostsmithError(`step "${spec.name}": unknown step type ${spec.type}`, 2);
  let summary: string | undefined;
  try {
    const scope = scopeFor(h, spec);
    if (spec.when !== undefined) {
      const w = render(spec.when, scope, { step: spec.name, field: 'when' });
      if (h.touched.size) return unknownUntilApply(h, spec, 'when');
      if (falsy(w)) return { spec, status: 'skipped', summary: `when: ${JSON.stringify(w.trim())}`, irreversible: false };
    }
    const ctx = contextFor(h, spec, scope);
    const rendered = renderDeep(spec.params, scope, { step: spec.name, field: spec.type });
    if (h.touched.size) return unknownUntilApply(h, spec, spec.type);
    refuseNul(rendered, spec.type);
    const parsed = parseParams(type, rendered);
    if (!parsed.success) {
      const why = parsed.error.issues.map((i) => `${[spec.type, ...i.path].join('.')}: ${i.message}`).join('; ');
      throw new StepError(`invalid parameters after rendering: ${why}`);
    }
    const params = type.prepare ? await type.prepare(ctx, parsed.data) : parsed.data;
    const digest = paramsDigest(h.o.salt ?? '', params);
    // `unless` is a command of the recipe's: it may read anything.
    const reads = spec.unless === undefined ? type.footprint(params).reads : [ANYTHING];
    const after = dependsOn(h, reads);
    // In a plan, what an earlier change may move is known only after apply: shown with its likely
    // outcome, never as a promise. At its turn in an apply the earlier changes are made: it is real.
    const dynamic = h.o.mode === 'plan' && after.length > 0;
    if (spec.unless !== undefined) {
      const cmd = render(spec.unless, scope, { step: spec.name, field: 'unless' });
      if (h.touched.size) return unknownUntilApply(h, spec, 'unless');
      refuseNul(cmd, 'unless');
      const r = await ctx.exec(cmd);
      if (r.code === 0) {
        const summary = `unless: \`${cmd}\` succeeded`;
        if (dynamic) return likelyOutcome(h, spec, params, type, after, `skipped (${summary})`, digest);
        return { spec, status: 'skipped', summary, irreversible: false, paramsDigest: digest, ...(after.length ? { dependsOn: after } : {}) };
      }
    }
    let state: unknown;
    try {
      state = await type.check(ctx, params);
    } catch (e) {
      // What an earlier change will create (a package's files, a new user) cannot be read yet.
      if (h.o.mode === 'plan' && after.length && !(e instanceof ConnectError)) return unknownUntilApply(h, spec, spec.type, after, errorMessage(e), digest);
      throw e;
    }
    let plan = type.plan(params, state, { runId: h.o.runId, step: spec.name, backupDir: ctx.backupDir, sensitive: h.o.sensitive?.(JSON.stringify(params)) });
    summary = plan.summary;
    // Masking the new secret is not enough: the old content may hold the value it replaces.
    if (plan.diff && h.o.sensitive?.(JSON.stringify(params))) plan = { ...plan, diff: HIDDEN_DIFF };
    if (dynamic) return likelyOutcome(h, spec, params, type, after, plan.changed ? plan.summary : `unchanged (${plan.summary})`, digest, plan);
    const pre = stateFingerprint(type, params, state);
    const base = { spec, summary: plan.summary, paramsDigest: digest, pre, ...(after.length ? { dependsOn: after } : {}) };
    if (!plan.changed) return { ...base, status: 'unchanged', irreversible: false };
    h.changing.push({ name: spec.name, writes: type.footprint(params).writes });
    return {
      ...base,
      status: 'planned',
      diff: plan.diff,
      irreversible: plan.undo === null,
      work: { type, ctx, params, plan, state },
    };
  } catch (e) {
    if (e instanceof ConnectError) throw e;
    return { spec, status: 'failed', summary: summary ?? `${spec.type} step failed before any change`, irreversible: false, error: errorMessage(e) };
  }
}

/** Names of the earlier changing steps whose writes meet any of `reads`, in order. */
function dependsOn(h: Pick<HostRun, 'changing'>, reads: string[]): string[] {
  return h.changing.filter((c) => meets(c.writes, reads)).map((c) => c.name);
}

/**
 * A step that reads what an earlier step of the plan may change: known after apply, planned again
 * at its turn. What it would do against the host as it is now is shown as its likely outcome (with
 * the diff), and it counts as changing for the steps after it.
 */
function likelyOutcome(h: HostRun, spec: StepSpec, params: unknown, type: StepType, after: string[], now: string, digest: string, plan?: Plan<unknown>): PlannedStep {
  h.changing.push({ name: spec.name, writes: type.footprint(params).writes });
  return {
    spec,
    status: 'planned',
    summary: `known after apply (it reads what ${after.join(', ')} may change); as the host is now: ${now}`,
    ...(plan?.changed && plan.diff ? { diff: plan.diff } : {}),
    irreversible: plan?.changed === true && plan.undo === null,
    dependsOn: after,
    paramsDigest: digest,
  };
}

/**
 * A step whose params, condition or state depend on what an earlier step will do: planned, its
 * state known only after apply. What it writes is read from its params where they are known.
 */
function unknownUntilApply(h: HostRun, spec: StepSpec, field: string, after: string[] = [], why?: string, digest?: string): PlannedStep {
  const deps = after.length ? after : [...h.touched];
  h.changing.push({ name: spec.name, writes: writesOf(h, spec) });
  return {
    spec,
    status: 'planned',
    summary: `known after apply (${field} depends on: ${deps.join(', ')})${why ? ` — now: ${why}` : ''}`,
    irreversible: false,
    dependsOn: deps,
    ...(digest ? { paramsDigest: digest } : {}),
  };
}

/**
 * A step's params parsed by its type's schema, by rendered value: a step renders alike on most
 * hosts, and parsing is pure, so a fleet parses each once. The data is frozen, being shared.
 */
const parsedParams = new Map<string, ReturnType<StepType['schema']['safeParse']>>();
function parseParams(type: StepType, rendered: unknown): ReturnType<StepType['schema']['safeParse']> {
  const key = `${type.type}\0${JSON.stringify(rendered)}`;
  let r = parsedParams.get(key);
  if (!r) {
    r = type.schema.safeParse(rendered);
    if (r.success) deepFreeze(r.data);
    if (parsedParams.size >= 5000) parsedParams.clear();
    parsedParams.set(key, r);
  }
  return r;
}

function deepFreeze(v: unknown): void {
  if (v === null || typeof v !== 'object' || ArrayBuffer.isView(v) || Object.isFrozen(v)) return;
  Object.freeze(v);
  for (const x of Object.values(v)) deepFreeze(x);
}

/** What a step reads (its type's footprint), `*` when that cannot be known before it runs. */
function readsOf(h: HostRun, spec: StepSpec): string[] {
  const type = stepType(spec.type);
  try {
    const parsed = type && parseParams(type, renderDeep(spec.params, scopeFor(h, spec), { step: spec.name, field: spec.type }));
    const reads = parsed?.success ? type?.footprint(parsed.data).reads : undefined;
    // `when` and `unless` may read anything.
    if (reads && spec.when === undefined && spec.unless === undefined) return widen(reads, KNOWN_AFTER_APPLY);
  } catch {
    // params that cannot be rendered yet
  }
  return ['*'];
}

function writesOf(h: HostRun, spec: StepSpec): string[] {
  const type = stepType(spec.type);
  try {
    const parsed = type && parseParams(type, renderDeep(spec.params, scopeFor(h, spec), { step: spec.name, field: spec.type }));
    const writes = parsed?.success ? type?.footprint(parsed.data).writes : undefined;
    // A name not known yet (`path:/srv/(known after apply)`) may be any name of that kind.
    if (writes) return widen(writes, KNOWN_AFTER_APPLY);
  } catch {
    // params that cannot be rendered yet: anything may be written
  }
  return ['*'];
}
