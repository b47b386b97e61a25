/**
 * What one host's run carries from step to step, and the scope and context each step gets from
 * it. Everything here is per host and explicit: no step reaches for ambient state.
 */
import { buildScope, render, renderScopeVars } from '../render/template.js';
import type { Recipe, RetrySpec, StepSpec } from '../recipe/types.js';
import { readSource } from '../recipe/sources.js';
import type { StepContext, StepType } from '../steps/step.js';
import type { Transport } from '../transport/transport.js';
import type { Counts, Emit } from './events.js';
import type { Facts } from './facts.js';
import type { Journal } from './journal.js';
import type { PlannedStep } from './planned-step.js';
import type { PlanHost } from './plan-value.js';
import { Recorder } from './recorder.js';
import type { ShellTransport } from '../transport/base.js';

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
}

/** What `steps.<name>` gives later templates. */
/** When the run's host lock was taken, and whether another run locked the host since this one first read it. */
export interface LockTaken {
  at: number;
  quiet: boolean;
}

export interface StepResult {
  status: string;
  changed: boolean;
  stdout: string;
  stderr: string;
}

export interface Completed {
  spec: StepSpec;
  type: StepType;
  params: unknown;
  undo: unknown;
  summary: string;
  ctx: StepContext;
}

export interface HostRun {
  o: HostRunOptions;
  rec: Recorder;
  /** Vars with their template defaults rendered for this host. */
  vars: Record<string, unknown>;
  baseSudo: boolean;
  counts: Counts;
  results: Record<string, StepResult>;
  completed: Completed[];
  notified: Set<string>;
  /** Steps that will change (planned) or changed, with what they write: what later checks may depend on. */
  changing: Array<{ name: string; writes: string[] }>;
  /** Planned steps whose results a template read while rendering the current step. */
  touched: Set<string>;
  /** Every step's plan, in the order the steps took their turn. */
  planned: PlannedStep[];
  /** Why the run stops (a fatal step failure); undefined while it goes on. */
  fatal?: string;
  /** The step whose failure set `fatal`, when a step's did (not a lost link, nor another host's failure). */
  fatalStep?: string;
  /** The journal could not be written: nothing more may change. */
  journalBroken?: string;
  /** Steps whose apply is under way (a lost link leaves them undecided until the host is read again). */
  applying: Map<string, { p: PlannedStep; mark: { journaled: boolean } }>;
}

export const KNOWN_AFTER_APPLY = '(known after apply)';

export function newHostRun(o: HostRunOptions): HostRun {
  return {
    o,
    rec: new Recorder(o.journal, o.emit),
    vars: renderDefaults(o.recipe, o.vars, o.facts),
    baseSudo: o.sudo || o.recipe.sudo || o.recipe.defaults.sudo === true,
    counts: { changed: 0, unchanged: 0, skipped: 0, failed: 0, rolledBack: 0 },
    results: {},
    completed: [],
    notified: new Set(),
    changing: [],
    touched: new Set(),
    planned: [],
    applying: new Map(),
  };
}

/**
 * In a plan, a step that would change has no output yet: its stdout and stderr are known after
 * apply, and a template that reads them makes the reading step dynamic.
 */
export function plannedResult(h: HostRun, name: string): StepResult {
  const unknown = () => {
    h.touched.add(name);
    return KNOWN_AFTER_APPLY;
  };
  return Object.defineProperties({ status: 'changed', changed: true } as StepResult, {
    stdout: { get: unknown, enumerable: true },
    stderr: { get: unknown, enumerable: true },
  });
}

/**
 * An included recipe names its own steps without the prefix it gets when included
 * (`steps.[Get id]` inside `mon`): those names are aliases of `mon/Get id` for its steps.
 */
function resultsFor(h: HostRun, spec: StepSpec): Record<string, StepResult> {
  const cut = spec.name.lastIndexOf('/');
  if (cut < 0) return h.results;
  const prefix = spec.name.slice(0, cut + 1);
  const view: Record<string, StepResult> = { ...h.results };
  for (const [name, r] of Object.entries(h.results)) {
    if (name.startsWith(prefix) && !name.slice(prefix.length).includes('/')) view[name.slice(prefix.length)] ??= r;
  }
  return view;
}

export function scopeFor(h: HostRun, spec: StepSpec): Record<string, unknown> {
  const steps = resultsFor(h, spec);
  if (!spec.scopeVars) return buildScope(h.vars, h.o.facts, steps);
  // An include's vars may use the vars before them, so they render one at a time.
  const values = renderScopeVars(spec.scopeVars, h.vars, h.o.facts, steps, { step: spec.name, field: 'vars' });
  return buildScope(values, h.o.facts, steps);
}

export function contextFor(h: HostRun, spec: StepSpec, scope: Record<string, unknown>): StepContext {
  const o = h.o;
  const sudo = spec.sudo ?? h.baseSudo;
  const timeoutMs = spec.timeoutMs ?? o.defaultTimeoutMs;
  return {
    host: o.host,
    transport: o.transport,
    facts: o.facts,
    runId: o.runId,
    step: spec.name,
    backupDir: o.backupDirFor(sudo),
    sudo,
    planOnly: o.mode === 'plan',
    planUnseen: o.mode === 'apply' && o.expected === undefined,
    timeoutMs,
    exec: (cmd, eo = {}) => o.transport.exec(cmd, { sudo, timeoutMs, ...eo }),
    readFile: (p) => o.transport.readFile(p, { sudo }),
    writeFile: (p, d, wo = {}) => o.transport.writeFile(p, d, { sudo, ...wo }),
    readSource: async (src, kind) => {
      const r = await readSource(spec.dir, src, kind);
      o.onSource?.(r.path, r.content);
      return r;
    },
    render: (text, extra = {}, where) => render(text, { ...scope, ...extra }, { step: spec.name, field: where }),
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
