/**
 * One host, one recipe: when → unless → check → plan → (journal) → apply → (journal), in the
 * order `needs` allows; on a fatal failure every completed step is rolled back, newest first.
 */
import { HostsmithError, StepError, errorMessage } from '../errors.js';
import { buildScope, render, renderDeep, renderScopeVars } from '../render/template.js';
import type { Recipe, RetrySpec, StepSpec } from '../recipe/types.js';
import { readSource } from '../recipe/sources.js';
import { stepType } from '../steps/registry.js';
import { fingerprint, sha256, type Plan, type StepContext, type StepType } from '../steps/step.js';
import type { Transport } from '../transport/transport.js';
import type { Counts, Emit, HostStatus, StepStatus } from './events.js';
import type { Facts } from './facts.js';
import type { Journal } from './journal.js';

export interface HostRunOptions {
  runId: string;
  mode: 'plan' | 'apply';
  recipe: Recipe;
  host: string;
  transport: Transport;
  facts: Facts;
  vars: Record<string, unknown>;
  /** Host-level sudo (inventory or --sudo). */
  sudo: boolean;
  /**
   * Where backups of this run go on the host, for a step with or without sudo: a non-root
   * login keeps its own backups in its home, but a sudo step's must be root's.
   */
  backupDirFor(sudo: boolean): string;
  emit: Emit;
  journal?: Journal;
  /** First Ctrl-C: finish the step in flight, then roll back. */
  interrupt?: AbortSignal;
  /** Second Ctrl-C: stop rolling back; the run stays open in the journal with what is left. */
  abortRollback?: AbortSignal;
  defaultTimeoutMs?: number;
  defaultRetry?: RetrySpec;
  sleep?: (ms: number) => Promise<void>;
  /** Does this text hold a secret value? Diffs of such content are not shown at all. */
  sensitive?: (text: string) => boolean;
}

export interface HostResult {
  status: HostStatus;
  counts: Counts;
  error?: string;
}

interface StepResult {
  status: StepStatus;
  changed: boolean;
  stdout: string;
  stderr: string;
  summary: string;
}

interface Completed {
  spec: StepSpec;
  type: StepType;
  params: unknown;
  undo: unknown;
  ctx: StepContext;
}

const KNOWN_AFTER_APPLY = '(known after apply)';
const HIDDEN_DIFF = '(diff hidden: the content holds secret values)\n';
const now = () => new Date().toISOString();
const defaultSleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function falsy(s: string): boolean {
  const t = s.trim().toLowerCase();
  return t === '' || t === 'false' || t === '0';
}

export async function runHost(o: HostRunOptions): Promise<HostResult> {
  const counts: Counts = { changed: 0, unchanged: 0, skipped: 0, failed: 0, rolledBack: 0 };
  const results: Record<string, StepResult> = {};
  const completed: Completed[] = [];
  const notified = new Set<string>();
  const sleep = o.sleep ?? defaultSleep;
  let fatal: string | undefined;

  const baseSudo = o.sudo || o.recipe.sudo || o.recipe.defaults.sudo === true;
  const vars = renderDefaults(o.recipe, o.vars, o.facts);

  /**
   * An included recipe names its own steps without the prefix it gets when included
   * (`steps.[Get id]` inside `mon`): those names are aliases of `mon/Get id` for its steps.
   */
  function resultsFor(spec: StepSpec): Record<string, StepResult> {
    const cut = spec.name.lastIndexOf('/');
    if (cut < 0) return results;
    const prefix = spec.name.slice(0, cut + 1);
    const view: Record<string, StepResult> = { ...results };
    for (const [name, r] of Object.entries(results)) {
      if (name.startsWith(prefix) && !name.slice(prefix.length).includes('/')) view[name.slice(prefix.length)] ??= r;
    }
    return view;
  }

  function scopeFor(spec: StepSpec): Record<string, unknown> {
    const steps = resultsFor(spec);
    if (!spec.scopeVars) return buildScope(vars, o.facts, steps);
    // An include's vars may use the vars before them, so they render one at a time.
    const values = renderScopeVars(spec.scopeVars, vars, o.facts, steps, { step: spec.name, field: 'vars' });
    return buildScope(values, o.facts, steps);
  }

  function contextFor(spec: StepSpec, scope: Record<string, unknown>): StepContext {
    const sudo = spec.sudo ?? baseSudo;
    const timeoutMs = spec.timeoutMs ?? o.defaultTimeoutMs;
    return {
      host: o.host,
      transport: o.transport,
      facts: o.facts,
      runId: o.runId,
      step: spec.name,
      backupDir: o.backupDirFor(sudo),
      sudo,
      timeoutMs,
      exec: (cmd, eo = {}) => o.transport.exec(cmd, { sudo, timeoutMs, ...eo }),
      readFile: (p) => o.transport.readFile(p, { sudo }),
      writeFile: (p, d, wo = {}) => o.transport.writeFile(p, d, { sudo, ...wo }),
      readSource: (src, kind) => readSource(spec.dir, src, kind),
      render: (text, extra = {}, where) => render(text, { ...scope, ...extra }, { step: spec.name, field: where }),
    };
  }

  const isHandler = (spec: StepSpec) => o.recipe.handlers.includes(spec);

  function finish(spec: StepSpec, status: StepStatus, started: number, extra: { summary: string; diff?: string; irreversible?: boolean; error?: string; stdout?: string; stderr?: string }) {
    const key: keyof Counts = status === 'planned' ? 'changed' : status;
    counts[key]++;
    results[spec.name] = {
      status,
      changed: status === 'changed' || status === 'planned',
      // As Ansible does: `echo x` gives "x", so it can be used inside a command line.
      stdout: (extra.stdout ?? '').replace(/[\r\n]+$/, ''),
      stderr: (extra.stderr ?? '').replace(/[\r\n]+$/, ''),
      summary: extra.summary,
    };
    o.emit({
      event: 'step-finished',
      runId: o.runId,
      time: now(),
      host: o.host,
      step: spec.name,
      type: spec.type,
      status,
      summary: extra.summary,
      ...(extra.diff ? { diff: extra.diff } : {}),
      irreversible: extra.irreversible ?? false,
      durationMs: Date.now() - started,
      ...(extra.error ? { error: extra.error } : {}),
      ...(isHandler(spec) ? { handler: true } : {}),
    });
    if ((status === 'changed' || status === 'planned') && spec.notify.length) spec.notify.forEach((h) => notified.add(h));
  }

  async function runStep(spec: StepSpec): Promise<void> {
    const started = Date.now();
    const type = stepType(spec.type);
    if (!type) throw new HostsmithError(`step "${spec.name}": unknown step type ${spec.type}`, 2);
    o.emit({ event: 'step-started', runId: o.runId, time: now(), host: o.host, step: spec.name, type: spec.type });
    let params: unknown;
    let plan: Plan<unknown> | undefined;
    let journaled = false;
    try {
      const scope = scopeFor(spec);
      if (spec.when !== undefined) {
        const w = render(spec.when, scope, { step: spec.name, field: 'when' });
        if (falsy(w)) return finish(spec, 'skipped', started, { summary: `when: ${JSON.stringify(w.trim())}` });
      }
      const ctx = contextFor(spec, scope);
      const rendered = renderDeep(spec.params, scope, { step: spec.name, field: spec.type });
      const parsed = type.schema.safeParse(rendered);
      if (!parsed.success) {
        const why = parsed.error.issues.map((i) => `${[spec.type, ...i.path].join('.')}: ${i.message}`).join('; ');
        throw new StepError(`invalid parameters after rendering: ${why}`);
      }
      params = type.prepare ? await type.prepare(ctx, parsed.data) : parsed.data;
      if (spec.unless !== undefined) {
        const cmd = render(spec.unless, scope, { step: spec.name, field: 'unless' });
        const r = await ctx.exec(cmd);
        if (r.code === 0) return finish(spec, 'skipped', started, { summary: `unless: \`${cmd}\` succeeded` });
      }
      const state = await type.check(ctx, params);
      plan = type.plan(params, state, { runId: o.runId, step: spec.name, backupDir: ctx.backupDir });
      // Masking the new secret is not enough: the old content may hold the value it replaces.
      if (plan.diff && o.sensitive?.(JSON.stringify(params))) plan = { ...plan, diff: HIDDEN_DIFF };
      const irreversible = plan.changed && plan.undo === null;
      if (!plan.changed) return finish(spec, 'unchanged', started, { summary: plan.summary });
      if (o.mode === 'plan') {
        return finish(spec, 'planned', started, {
          summary: plan.summary,
          diff: plan.diff,
          irreversible,
          stdout: KNOWN_AFTER_APPLY,
          stderr: KNOWN_AFTER_APPLY,
        });
      }
      await o.journal?.write({
        kind: 'step-started',
        time: now(),
        host: o.host,
        step: spec.name,
        type: spec.type,
        ...(isHandler(spec) ? { handler: true } : {}),
        params: forJournal(params),
        undo: plan.undo,
        irreversible,
        summary: plan.summary,
        pre: fingerprint(state),
      });
      journaled = true;
      const out = await withRetry(spec.retry ?? o.defaultRetry, sleep, () => type.apply(ctx, params, plan!));
      completed.push({ spec, type, params, undo: plan.undo, ctx });
      let post: string | undefined;
      try {
        post = fingerprint(await type.check(ctx, params));
      } catch {
        post = undefined;
      }
      await o.journal?.write({
        kind: 'step-finished',
        time: now(),
        host: o.host,
        step: spec.name,
        type: spec.type,
        status: 'changed',
        summary: plan.summary,
        changed: true,
        durationMs: Date.now() - started,
        ...(post ? { post } : {}),
      });
      finish(spec, 'changed', started, {
        summary: plan.summary,
        diff: plan.diff,
        irreversible,
        stdout: out.stdout,
        stderr: out.stderr,
      });
    } catch (e) {
      if (e instanceof HostsmithError && e.exitCode === 4) throw e;
      const error = errorMessage(e);
      if (journaled) {
        await o.journal?.write({
          kind: 'step-finished',
          time: now(),
          host: o.host,
          step: spec.name,
          type: spec.type,
          status: 'failed',
          summary: plan?.summary ?? '',
          changed: false,
          durationMs: Date.now() - started,
          error,
        });
      }
      finish(spec, 'failed', started, { summary: plan?.summary ?? `${spec.type} step failed before any change`, error });
      if (spec.fatal) fatal = `step "${spec.name}" failed: ${error}`;
    }
  }

  const parallel = Math.max(1, o.recipe.defaults.parallel || 1);
  try {
    // A plan goes on past a failing step, so one dry run shows every problem; apply stops.
    const stop = () => (o.mode === 'apply' && fatal !== undefined) || o.interrupt?.aborted === true;
    await schedule(o.recipe.steps, parallel, runStep, stop);
    for (const h of o.recipe.handlers) {
      if (stop()) break;
      if (notified.has(h.name)) await runStep(h);
    }
  } catch (e) {
    if (!(e instanceof HostsmithError && e.exitCode === 4)) throw e;
    // The connection is gone: nothing can be rolled back from here; the journal keeps what is left.
    const left = completed.map((c) => c.spec.name);
    return {
      status: left.length && o.mode === 'apply' ? 'rollback-incomplete' : 'unreachable',
      counts,
      error: `${e.message}${left.length && o.mode === 'apply' ? `; not rolled back: ${left.join(', ')} — see \`hostsmith show ${o.runId}\` and undo them by hand once the host is reachable` : ''}`,
    };
  }

  const interrupted = o.interrupt?.aborted === true;
  if (!fatal && !interrupted) return { status: 'ok', counts };
  if (o.mode === 'plan') return { status: interrupted ? 'interrupted' : 'failed', counts, error: fatal };

  let incomplete = false;
  for (const c of [...completed].reverse()) {
    if (o.abortRollback?.aborted) {
      incomplete = true;
      break;
    }
    const ok = await rollbackOne(c);
    if (ok) counts.rolledBack++;
    else incomplete = true;
  }
  const status: HostStatus = incomplete ? 'rollback-incomplete' : interrupted ? 'interrupted' : completed.length ? 'rolled-back' : 'failed';
  return { status, counts, error: fatal ?? 'interrupted by the user' };

  async function rollbackOne(c: Completed): Promise<boolean> {
    await o.journal?.write({ kind: 'rollback-started', time: now(), host: o.host, step: c.spec.name, type: c.spec.type });
    let error: string | undefined;
    if (c.undo === null) {
      error = `irreversible: the step has no rollback, so its change stays (${results[c.spec.name]?.summary ?? c.spec.type})`;
    } else {
      try {
        await c.type.rollback(c.ctx, c.params, c.undo);
      } catch (e) {
        error = errorMessage(e);
      }
    }
    const status = error ? 'rollback-failed' : 'rolled-back';
    await o.journal?.write({ kind: 'rollback-finished', time: now(), host: o.host, step: c.spec.name, type: c.spec.type, status, ...(error ? { error } : {}) });
    o.emit({ event: 'rollback-finished', runId: o.runId, time: now(), host: o.host, step: c.spec.name, type: c.spec.type, status, ...(error ? { error } : {}) });
    return !error;
  }
}

/**
 * Vars still at a default that is a template (`url: "https://{{domain}}/"`) are rendered, in
 * declaration order, with the vars before them and the host's facts. Given values are not: a
 * value from the command line or a file is taken as written.
 */
function renderDefaults(recipe: Recipe, vars: Record<string, unknown>, facts: Facts): Record<string, unknown> {
  const out = { ...vars };
  for (const [name, spec] of Object.entries(recipe.vars)) {
    const v = out[name];
    if (typeof v === 'string' && v === spec.default && v.includes('{{')) {
      out[name] = render(v, buildScope(out, facts, {}), { field: `vars.${name}` });
    }
  }
  return out;
}

/**
 * Params as the journal keeps them: content a step resolved locally (a rendered template, a
 * copied file) is recorded by fingerprint only — it can be large, the recipe can make it again,
 * and rollback never needs it (backups live on the host).
 */
function forJournal(params: unknown): unknown {
  if (!params || typeof params !== 'object') return params;
  const out: Record<string, unknown> = { ...(params as Record<string, unknown>) };
  for (const k of ['rendered', 'resolvedContent']) {
    const v = out[k];
    if (typeof v === 'string') out[k] = `sha256:${sha256(v)} (${Buffer.byteLength(v)} bytes)`;
  }
  return out;
}

async function withRetry<T>(retry: RetrySpec | undefined, sleep: (ms: number) => Promise<void>, fn: () => Promise<T>): Promise<T> {
  const attempts = Math.max(1, retry?.attempts ?? 1);
  let delay = retry?.delayMs ?? 0;
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (e) {
      if (i >= attempts || (e instanceof HostsmithError && e.exitCode === 4)) {
        if (attempts > 1 && e instanceof Error) e.message = `${e.message} (after ${i} attempts)`;
        throw e;
      }
      if (delay > 0) await sleep(delay);
      delay = delay * (retry?.backoff ?? 1);
    }
  }
}

/**
 * Runs steps whose `needs` are finished, up to `limit` at once, in declaration order among the
 * ready ones; with limit 1 this is plain sequential order. Stops launching once `stop()` says so.
 */
export async function schedule(steps: StepSpec[], limit: number, run: (s: StepSpec) => Promise<void>, stop: () => boolean): Promise<void> {
  const done = new Set<string>();
  const pending = [...steps];
  const running = new Map<string, Promise<void>>();
  while (pending.length || running.size) {
    if (!stop()) {
      for (let i = 0; i < pending.length && running.size < limit; ) {
        const s = pending[i]!;
        if (s.needs.every((n) => done.has(n) || !steps.some((x) => x.name === n))) {
          pending.splice(i, 1);
          running.set(
            s.name,
            run(s).finally(() => {
              done.add(s.name);
              running.delete(s.name);
            }),
          );
        } else i++;
      }
    } else if (!running.size) break;
    if (!running.size) {
      if (pending.length) throw new HostsmithError(`cannot order steps: ${pending.map((s) => s.name).join(', ')} wait on each other`, 2);
      break;
    }
    await Promise.race(running.values());
  }
}
