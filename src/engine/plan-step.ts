/**
 * Planning one step on one host: when → render → unless → check → plan, into a PlannedStep value.
 * Reads only. The same function serves a dry run, the re-check of a saved plan, and each step's
 * turn during apply, so there is one way to decide what a step would do.
 */
import { ConnectError, HostsmithError, StepError, errorMessage } from '../errors.js';
import { render, renderDeep } from '../render/template.js';
import type { Recipe, StepSpec } from '../recipe/types.js';
import { stepType } from '../steps/registry.js';
import { isGuarded, stateFingerprint, sha256, type Plan, type StepType } from '../steps/step.js';
import { contextFor, scopeFor, type StepEnv } from './host-run.js';
import { KNOWN_AFTER_APPLY, type Changing, type HostState } from './host-state.js';
import { ANYTHING, meets, widen } from '../steps/footprint.js';
import type { BatchWith, Carry, Probes } from './probe.js';

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

/** What planning a step on a host is given, beside the host's state. */
export interface PlanInputs {
  /** What the step's scope and context are made from. */
  env: StepEnv;
  /** Salt for the digests of params in plans. */
  salt: string;
  /** Does this text hold a secret value? Diffs of such content are not shown at all. */
  sensitive?: (text: string) => boolean;
  /** Which steps come after a step, whose reads are batched with its own (handlers plan only when notified). */
  recipe: Pick<Recipe, 'steps' | 'handlers'>;
  /** The host's batched reads; none: each step reads on its own. */
  probes?: Probes;
}

/** The part of a host's state planning reads and adds to. */
export type PlanState = Pick<HostState, 'changing' | 'touched' | 'results' | 'planned'>;

/**
 * Plans one step. A step that cannot be planned is `failed` with its error (a lost connection is
 * thrown, not returned: the host is gone, not the step).
 */
export async function planStep(state: PlanState, inputs: PlanInputs, spec: StepSpec): Promise<PlannedStep> {
  const { probes } = inputs;
  // Its reads, and those of the steps after it, in one round trip (probe.ts).
  await probes?.prefetch(inputs.env.transport, spec, batchWith(state, inputs, spec));
  const batched = inputs.env.mode === 'apply' && probes?.fromBatch(spec) === true;
  const changing = state.changing.length;
  const planned = await planOnce(state, inputs, spec);
  // A guarded type holds the host to what it was planned from in the very exec that changes it.
  if (!batched || planned.status !== 'planned' || !planned.work || isGuarded(planned.work.type, planned.work.params)) return planned;
  // It will change the host: read it again at its turn, so a change made since the batch is seen.
  state.changing.length = changing;
  probes?.readLive(spec);
  return planOnce(state, inputs, spec);
}

/** Batches the reads of `spec` and of the steps after it now, taking `carry` along (run.ts firstContact). */
export async function prefetchCarrying(state: PlanState, inputs: PlanInputs, spec: StepSpec, carry: Carry): Promise<void> {
  await inputs.probes?.prefetch(inputs.env.transport, spec, batchWith(state, inputs, spec), carry);
}

/**
 * The steps batched with `spec`: every later one not planned yet (not handlers), each planned
 * over the noting transport on a copy of the state, without batching of its own.
 */
function batchWith(state: PlanState, inputs: PlanInputs, spec: StepSpec): BatchWith {
  return {
    later: () => {
      const done = new Set(state.planned.map((x) => x.spec.name));
      const { steps, handlers } = inputs.recipe;
      const all = [...steps, ...handlers];
      return all.slice(all.indexOf(spec) + 1).filter((s) => !done.has(s.name) && !handlers.includes(s));
    },
    planOver: (step, transport) => {
      const copy: PlanState = { changing: [...state.changing], touched: new Set(), results: state.results, planned: [...state.planned] };
      return planStep(copy, { ...inputs, env: { ...inputs.env, transport }, probes: undefined }, step);
    },
    readsOf: (step) => readsOf(state, inputs.env, step),
  };
}

async function planOnce(state: PlanState, inputs: PlanInputs, spec: StepSpec): Promise<PlannedStep> {
  const { env } = inputs;
  state.touched.clear();
  const type = stepType(spec.type);
  if (!type) throw new HostsmithError(`step "${spec.name}": unknown step type ${spec.type}`, 2);
  let summary: string | undefined;
  try {
    const scope = scopeFor(env, state.results, spec);
    if (spec.when !== undefined) {
      const w = render(spec.when, scope, { step: spec.name, field: 'when' });
      if (state.touched.size) return unknownUntilApply(state, env, spec, 'when');
      if (falsy(w)) return { spec, status: 'skipped', summary: `when: ${JSON.stringify(w.trim())}`, irreversible: false };
    }
    const ctx = contextFor(env, spec, scope);
    const rendered = renderDeep(spec.params, scope, { step: spec.name, field: spec.type });
    if (state.touched.size) return unknownUntilApply(state, env, spec, spec.type);
    refuseNul(rendered, spec.type);
    const parsed = parseParams(type, rendered);
    if (!parsed.success) {
      const why = parsed.error.issues.map((i) => `${[spec.type, ...i.path].join('.')}: ${i.message}`).join('; ');
      throw new StepError(`invalid parameters after rendering: ${why}`);
    }
    const params = type.prepare ? await type.prepare(ctx, parsed.data) : parsed.data;
    const digest = paramsDigest(inputs.salt, params);
    // `unless` is a command of the recipe's: it may read anything.
    const reads = spec.unless === undefined ? type.footprint(params).reads : [ANYTHING];
    const after = dependsOn(state.changing, reads);
    // In a plan, what an earlier change may move is known only after apply: shown with its likely
    // outcome, never as a promise. At its turn in an apply the earlier changes are made: it is real.
    const dynamic = env.mode === 'plan' && after.length > 0;
    if (spec.unless !== undefined) {
      const cmd = render(spec.unless, scope, { step: spec.name, field: 'unless' });
      if (state.touched.size) return unknownUntilApply(state, env, spec, 'unless');
      refuseNul(cmd, 'unless');
      const r = await ctx.exec(cmd);
      if (r.code === 0) {
        const summary = `unless: \`${cmd}\` succeeded`;
        if (dynamic) return likelyOutcome(state.changing, spec, params, type, after, `skipped (${summary})`, digest);
        return { spec, status: 'skipped', summary, irreversible: false, paramsDigest: digest, ...(after.length ? { dependsOn: after } : {}) };
      }
    }
    let current: unknown;
    try {
      current = await type.check(ctx, params);
    } catch (e) {
      // What an earlier change will create (a package's files, a new user) cannot be read yet.
      if (env.mode === 'plan' && after.length && !(e instanceof ConnectError)) return unknownUntilApply(state, env, spec, spec.type, after, errorMessage(e), digest);
      throw e;
    }
    let plan: Plan<unknown>;
    try {
      plan = type.plan(params, current, { runId: env.runId, step: spec.name, backupDir: ctx.backupDir, sensitive: inputs.sensitive?.(JSON.stringify(params)) });
    } catch (e) {
      // The same for what the host holds now but an earlier change will take away (a file an
      // earlier step removes, so that a link can take its place): refused now, not at its turn.
      if (env.mode === 'plan' && after.length) return unknownUntilApply(state, env, spec, spec.type, after, errorMessage(e), digest);
      throw e;
    }
    summary = plan.summary;
    // Masking the new secret is not enough: the old content may hold the value it replaces.
    if (plan.diff && inputs.sensitive?.(JSON.stringify(params))) plan = { ...plan, diff: HIDDEN_DIFF };
    if (dynamic) return likelyOutcome(state.changing, spec, params, type, after, plan.changed ? plan.summary : `${plan.skipped ? 'skipped' : 'unchanged'} (${plan.summary})`, digest, plan);
    const pre = stateFingerprint(type, params, current);
    const base = { spec, summary: plan.summary, paramsDigest: digest, pre, ...(after.length ? { dependsOn: after } : {}) };
    if (!plan.changed) return { ...base, status: plan.skipped ? 'skipped' : 'unchanged', irreversible: false };
    state.changing.push({ name: spec.name, writes: type.footprint(params).writes });
    return {
      ...base,
      status: 'planned',
      diff: plan.diff,
      irreversible: plan.undo === null,
      action: plan.action ?? 'change',
      work: { type, ctx, params, plan, state: current },
    };
  } catch (e) {
    if (e instanceof ConnectError) throw e;
    return { spec, status: 'failed', summary: summary ?? `${spec.type} step failed before any change`, irreversible: false, error: errorMessage(e) };
  }
}

/** Names of the earlier changing steps whose writes meet any of `reads`, in order. */
function dependsOn(changing: Changing[], reads: string[]): string[] {
  return changing.filter((c) => meets(c.writes, reads)).map((c) => c.name);
}

/**
 * A step that reads what an earlier step of the plan may change: known after apply, planned again
 * at its turn. What it would do against the host as it is now is shown as its likely outcome (with
 * the diff), and it counts as changing for the steps after it.
 */
function likelyOutcome(changing: Changing[], spec: StepSpec, params: unknown, type: StepType, after: string[], now: string, digest: string, plan?: Plan<unknown>): PlannedStep {
  changing.push({ name: spec.name, writes: type.footprint(params).writes });
  return {
    spec,
    status: 'planned',
    summary: `known after apply (it reads what ${after.join(', ')} may change); as the host is now: ${now}`,
    ...(plan?.changed && plan.diff ? { diff: plan.diff } : {}),
    irreversible: plan?.changed === true && plan.undo === null,
    ...(plan?.changed ? { action: plan.action ?? 'change' } : {}),
    dependsOn: after,
    paramsDigest: digest,
  };
}

/**
 * A step whose params, condition or state depend on what an earlier step will do: planned, its
 * state known only after apply. What it writes is read from its params where they are known.
 */
function unknownUntilApply(state: Pick<PlanState, 'touched' | 'changing' | 'results'>, env: StepEnv, spec: StepSpec, field: string, after: string[] = [], why?: string, digest?: string): PlannedStep {
  const deps = after.length ? after : [...state.touched];
  state.changing.push({ name: spec.name, writes: writesOf(state, env, spec) });
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
function readsOf(state: Pick<PlanState, 'results'>, env: StepEnv, spec: StepSpec): string[] {
  const type = stepType(spec.type);
  try {
    const parsed = type && parseParams(type, renderDeep(spec.params, scopeFor(env, state.results, spec), { step: spec.name, field: spec.type }));
    const reads = parsed?.success ? type?.footprint(parsed.data).reads : undefined;
    // `when` and `unless` may read anything.
    if (reads && spec.when === undefined && spec.unless === undefined) return widen(reads, KNOWN_AFTER_APPLY);
  } catch {
    // params that cannot be rendered yet
  }
  return ['*'];
}

function writesOf(state: Pick<PlanState, 'results'>, env: StepEnv, spec: StepSpec): string[] {
  const type = stepType(spec.type);
  try {
    const parsed = type && parseParams(type, renderDeep(spec.params, scopeFor(env, state.results, spec), { step: spec.name, field: spec.type }));
    const writes = parsed?.success ? type?.footprint(parsed.data).writes : undefined;
    // A name not known yet (`path:/srv/(known after apply)`) may be any name of that kind.
    if (writes) return widen(writes, KNOWN_AFTER_APPLY);
  } catch {
    // params that cannot be rendered yet: anything may be written
  }
  return ['*'];
}
