/**
 * What one host's run is given (its options), and the scope and context each step gets from it.
 * Its mutable state is host-state.ts; everything here is per host and explicit: no step reaches
 * for ambient state.
 */
import { buildScope, render, renderScopeVars } from '../render/template.js';
import type { Recipe, RetrySpec, StepSpec } from '../recipe/types.js';
import { readSource } from '../recipe/sources.js';
import type { HostConnection, StepContext } from '../steps/step.js';
import { ShellTransport } from '../transport/base.js';
import type { Transport } from '../transport/transport.js';
import type { Emit } from './events.js';
import type { Facts, FirstContact } from './facts.js';
import { newHostState, type HostState, type StepResult } from './host-state.js';
import type { Journal } from './journal.js';
import type { PlanHost } from './plan-value.js';
import { Probes } from './probe.js';
import { Recorder } from './recorder.js';

/** Lockout protection (`--confirm`): what the watchdog on the host waits for. */
export interface ConfirmOptions {
  /** How long the watchdog waits for the confirmation. */
  ms: number;
  /** The recipe's verify: commands (templates). */
  verify: string[];
  /** A brand-new connection to the host (the caller's to close): the "next login" that must still work. */
  openFresh(): Promise<ShellTransport>;
}

export interface HostRunOptions {
  runId: string;
  mode: 'plan' | 'apply';
  recipe: Recipe;
  host: string;
  transport: Transport;
  facts: Facts;
  /** `facts` are those the last run kept: read the real ones with the first batch (run.ts firstContact). */
  firstContact?: FirstContact;
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
  /** The plan this apply must follow (a saved plan, or the one shown at the terminal prompt). */
  expected?: PlanHost;
  /** Salt for the digests of params in plans. */
  salt?: string;
  /** First Ctrl-C: finish the step in flight, then roll back. */
  interrupt?: AbortSignal;
  /** Second Ctrl-C: stop rolling back; the run stays open in the journal with what is left. */
  abortRollback?: AbortSignal;
  defaultTimeoutMs?: number;
  defaultRetry?: RetrySpec;
  sleep?: (ms: number) => Promise<void>;
  /** Does this text hold a secret value? Diffs of such content are not shown at all. */
  sensitive?: (text: string) => boolean;
  /** Told of every local source file a step reads (templates, files), for the plan's source digests. */
  onSource?: (path: string, content: Buffer) => void;
  /** Fault injection for tests: called before each step's turn (the CLI wires it from the environment). */
  beforeStep?: (host: string, step: string) => Promise<void>;
  /**
   * Fault injection (`hostsmith test`, the tests): once the step of this name has had its turn in
   * an apply, the run on this host fails as if a later step had, and what it did is rolled back.
   */
  failAfterStep?: string;
  /** How long a lost connection is tried again (with backoff) before the host is given up (default 60 s). */
  reconnectMs?: number;
  /**
   * apply: takes the host lock if this run does not hold it yet (and journals host-started);
   * resolves to when it was held (a step read before then was read unlocked) and whether no other
   * run took the lock since this run first read the host (`quiet`: what it read is still good).
   * Called before every change: a run that changes nothing never locks the host.
   */
  beforeChange?: () => Promise<LockTaken>;
  /** apply: lockout protection (--confirm): a watchdog on the host, a new login and the verify commands before the host is done. */
  confirm?: ConfirmOptions;
  /**
   * apply: the host booted again during the run (a reboot step): the run's lock, if it held one in
   * the old boot's /run, is taken again (its own, or a fresh one; another run's is refused).
   */
  relock?: () => Promise<void>;
}

/** When the run's host lock was taken, and whether another run locked the host since this one first read it. */
export interface LockTaken {
  at: number;
  quiet: boolean;
}

/**
 * What each step's scope and context are made from on this host: fixed for the run (the results
 * of earlier steps, which change, are handed in beside it).
 */
export interface StepEnv {
  host: string;
  runId: string;
  mode: 'plan' | 'apply';
  transport: Transport;
  facts: Facts;
  /** Vars with their template defaults rendered for this host. */
  vars: Record<string, unknown>;
  /** Host-level sudo: the inventory's or --sudo, else the recipe's. */
  baseSudo: boolean;
  backupDirFor(sudo: boolean): string;
  /** An apply with no plan shown or saved to follow. */
  planUnseen: boolean;
  defaultTimeoutMs?: number;
  onSource?: (path: string, content: Buffer) => void;
  /** The run's connection to the host, for a step that takes the host away on purpose (a plan only reads that it is there). */
  connection?: HostConnection;
}

export function stepEnv(options: HostRunOptions, probes?: Pick<Probes, 'drop'>): StepEnv {
  const transport = options.transport as Partial<ShellTransport>;
  const reconnect = transport.reconnect?.bind(transport);
  const connection: HostConnection | undefined = reconnect
    ? {
        reconnect,
        rebooted: async () => {
          // Whatever was read in one batch before the reboot may have gone with the old boot.
          probes?.drop();
          await options.relock?.();
        },
      }
    : undefined;
  return {
    host: options.host,
    runId: options.runId,
    mode: options.mode,
    transport: options.transport,
    facts: options.facts,
    vars: renderDefaults(options.recipe, options.vars, options.facts),
    baseSudo: options.sudo || options.recipe.sudo || options.recipe.defaults.sudo === true,
    backupDirFor: (sudo) => options.backupDirFor(sudo),
    planUnseen: options.mode === 'apply' && options.expected === undefined,
    ...(options.defaultTimeoutMs !== undefined ? { defaultTimeoutMs: options.defaultTimeoutMs } : {}),
    ...(options.onSource ? { onSource: options.onSource } : {}),
    ...(connection ? { connection } : {}),
  };
}

/** One host's run as the orchestrator (run.ts) holds it: what it was given, its state, its record, its batched reads. */
export interface HostRun {
  options: HostRunOptions;
  env: StepEnv;
  state: HostState;
  rec: Recorder;
  probes: Probes;
}

export function newHostRun(options: HostRunOptions): HostRun {
  const probes = new Probes();
  return { options, env: stepEnv(options, probes), state: newHostState(), rec: new Recorder(options.journal, options.emit), probes };
}

/**
 * An included recipe names its own steps without the prefix it gets when included
 * (`steps.[Get id]` inside `mon`): those names are aliases of `mon/Get id` for its steps.
 */
function resultsFor(results: Record<string, StepResult>, spec: StepSpec): Record<string, StepResult> {
  const cut = spec.name.lastIndexOf('/');
  if (cut < 0) return results;
  const prefix = spec.name.slice(0, cut + 1);
  const view: Record<string, StepResult> = { ...results };
  for (const [name, result] of Object.entries(results)) {
    if (name.startsWith(prefix) && !name.slice(prefix.length).includes('/')) view[name.slice(prefix.length)] ??= result;
  }
  return view;
}

/** The scope the verify commands render in: the vars, the facts, every step's result. */
export function hostScope(env: Pick<StepEnv, 'vars' | 'facts'>, results: Record<string, StepResult>): Record<string, unknown> {
  return buildScope(env.vars, env.facts, results);
}

/** A step's scope: the vars (with an include's own, rendered in turn), the facts, earlier steps' results. */
export function scopeFor(env: Pick<StepEnv, 'vars' | 'facts'>, results: Record<string, StepResult>, spec: StepSpec): Record<string, unknown> {
  const steps = resultsFor(results, spec);
  if (!spec.scopeVars) return buildScope(env.vars, env.facts, steps);
  // An include's vars may use the vars before them, so they render one at a time.
  const values = renderScopeVars(spec.scopeVars, env.vars, env.facts, steps, { step: spec.name, field: 'vars' });
  return buildScope(values, env.facts, steps);
}

/** What a step's type is handed on this host: its exec, reads and writes with its sudo and timeout, its render. */
export function contextFor(env: StepEnv, spec: StepSpec, scope: Record<string, unknown>): StepContext {
  const { transport } = env;
  const sudo = spec.sudo ?? env.baseSudo;
  const timeoutMs = spec.timeoutMs ?? env.defaultTimeoutMs;
  return {
    host: env.host,
    transport,
    facts: env.facts,
    runId: env.runId,
    step: spec.name,
    backupDir: env.backupDirFor(sudo),
    sudo,
    planOnly: env.mode === 'plan',
    planUnseen: env.planUnseen,
    timeoutMs,
    exec: (cmd, options = {}) => transport.exec(cmd, { sudo, timeoutMs, ...options }),
    ...(transport instanceof ShellTransport ? { seed: (cmd: string, stdout: Buffer) => transport.seedRead(cmd, { sudo, timeoutMs }, stdout) } : {}),
    readFile: (path) => transport.readFile(path, { sudo }),
    writeFile: (path, data, options = {}) => transport.writeFile(path, data, { sudo, ...options }),
    readSource: async (src, kind) => {
      const source = await readSource(spec.dir, src, kind);
      env.onSource?.(source.path, source.content);
      return source;
    },
    render: (text, extra = {}, where) => render(text, { ...scope, ...extra }, { step: spec.name, field: where }),
    ...(env.connection ? { connection: env.connection } : {}),
  };
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
