/**
 * `undo <run-id>` (SPEC §9): rolls back what a finished run left on its hosts, from the journal
 * and the host backups alone — the recipe is not needed.
 *
 * In three moves, so the CLI can speak between them:
 * 1. `loadUndo` reads the run's journal (and every later undo run that names it) and says what
 *    is still to undo per host, newest change first, or why there is nothing to undo.
 * 2. `readHosts` connects and checks every step against the post-state the run journaled: a step
 *    whose state differs (drift), that is irreversible, or whose masked secret cannot be given
 *    back, is a problem. Nothing is written anywhere (no journal, no lock).
 * 3. `runUndo` is a run of its own: journal (`run-started` mode `undo`, `undoes: <run-id>`), the
 *    host lock as for apply, a re-check under the lock, then each step's rollback, journaled as any
 *    rollback is. Each step it rolls back is first journaled as a `step-started` copied from the
 *    undone run (params and undo data as journaled, `pre` = the undone run's post), so the undo
 *    run's own journal replays as a run whose steps were rolled back, and `recover` can finish it.
 *
 * Secrets: journaled params and undo data are masked (`***`). The apply journals a salted digest of
 * each secret var (run-started `secrets`); a step whose entries hold `***` gets the value back by
 * substitution, after the value given was checked against its digest. It is never written down.
 */
import { readFile } from 'node:fs/promises';
import { ConnectError, HostsmithError, InputError, errorMessage } from '../errors.js';
import type { ShellTransport } from '../transport/base.js';
import { worstStatus, type Counts, type Emit, type HostStatus, type RunStatus } from './events.js';
import { gatherFacts, type Facts } from './facts.js';
import { Journal, journalFile, listRunIds, parseJournal, readJournal, type JournalEntry } from './journal.js';
import { acquireLock } from './lock.js';
import { varDigest } from './plan-value.js';
import { Recorder } from './recorder.js';
import { contextOf, handlersAgain, holdsMask, journaledStep, rollBackJournaled, stateNow, type JournaledHost, type JournaledStep, type SecretDigests } from './journal-steps.js';
import { replay, undoSummary, type HostState, type RunState, type StepState } from './replay.js';
import { driveRun, isoNow, newRunId, pool, runStartedEntry, zeroCounts, type RunFrame } from './run-skeleton.js';
import { ANYTHING, meets } from '../steps/footprint.js';
import { stepType, withStepTypes } from '../steps/registry.js';
import { journaledTypes, usedTypes, type CustomTypes, type TypeModuleRef } from '../recipe/custom-types.js';
import { changeWrites } from '../steps/step.js';

export { MASK, type SecretDigests } from './journal-steps.js';

/** What run-started carries beyond the run state. */
interface StartExtras {
  undoes?: string;
  secrets?: SecretDigests;
  types?: TypeModuleRef[];
}

export interface UndoHost {
  host: HostState;
  /** Steps to roll back, newest first. */
  steps: StepState[];
}

export interface UndoTarget {
  stateDir: string;
  run: RunState;
  /** Set when there is nothing to undo: why (exit 0). */
  nothing?: string;
  /** Hosts with something to roll back, in the run's order. */
  hosts: UndoHost[];
  /** The undone run's secret vars and their digests. */
  secrets: SecretDigests;
  /** Secret vars whose values the steps to undo need (their entries hold ***). */
  needsSecrets: string[];
  /** Earlier undo runs of this run. */
  earlierUndos: string[];
  /** The undone run's custom step types (run-started `types`), imported again and unchanged. */
  types?: CustomTypes;
}

/** One thing that stops the undo of a step: drift, irreversible, a secret that cannot be given back. */
export interface UndoProblem {
  host: string;
  step: string;
  type: string;
  kind: 'drift' | 'irreversible' | 'secret' | 'unknown-type' | 'unreadable' | 'corrupt';
  message: string;
}

/** A host read and checked: its connection stays open for runUndo. */
export interface HostCheck {
  name: string;
  host: HostState;
  transport?: ShellTransport;
  facts?: Facts;
  /** Steps that can be rolled back, newest first, with what their rollback gets. */
  ready: ReadyStep[];
  problems: UndoProblem[];
  /** Connecting or reading failed: nothing can be done on this host. */
  error?: string;
}

/** A step that can be rolled back: params and undo data with secrets given back. */
export type ReadyStep = JournaledStep;

/** What a run-started entry says beyond the run state: the run it undoes, its secrets' digests. */
function extrasOf(e: JournalEntry | undefined): StartExtras {
  if (e?.kind !== 'run-started') return {};
  return {
    ...(e.undoes ? { undoes: e.undoes } : {}),
    ...(e.secrets ? { secrets: Object.fromEntries(Object.entries(e.secrets).map(([name, v]) => [name, v.sha256])) } : {}),
    ...(e.types ? { types: e.types } : {}),
  };
}

/** A journal's first entry, validated like any other; read alone, as scanning every run needs no more. */
async function firstEntry(file: string): Promise<JournalEntry | undefined> {
  try {
    const first = (await readFile(file, 'utf8')).split('\n', 1)[0] ?? '';
    return parseJournal(`${first}\n`, file).entries[0];
  } catch {
    return undefined;
  }
}

/** Is `value` the value of secret var `name` the run was applied with? */
export function secretMatches(t: Pick<UndoTarget, 'secrets'>, name: string, value: string): boolean {
  return (t.secrets[name] ?? []).some((d) => {
    const cut = d.indexOf(':');
    return varDigest(d.slice(0, cut), name, value) === d.slice(cut + 1);
  });
}

/** Later runs in the state dir that undo `runId` (their ids). */
async function undoRunsOf(stateDir: string, runId: string): Promise<string[]> {
  const out: string[] = [];
  for (const id of await listRunIds(stateDir)) {
    if (id === runId) continue;
    const x = extrasOf(await firstEntry(journalFile(stateDir, id)));
    if (x.undoes === runId) out.push(id);
  }
  return out.sort();
}

/** Step 1: what is still to undo of `runId` (on `hosts`, when named). */
export async function loadUndo(stateDir: string, runId: string, hosts?: string[]): Promise<UndoTarget> {
  const j = await readJournal(stateDir, runId);
  const run = replay(j.entries);
  if (!run) throw new InputError(`run ${runId} recorded nothing (its journal ${j.file} has no run-started entry): it changed nothing, so there is nothing to undo`);
  const extras = extrasOf(j.entries[0]);
  const base: UndoTarget = { stateDir, run, hosts: [], secrets: extras.secrets ?? {}, needsSecrets: [], earlierUndos: [] };
  if (run.mode === 'undo') return { ...base, nothing: `run ${runId} is itself an undo (of run ${extras.undoes ?? '?'}): nothing to undo. To redo what it took back, apply the recipe again.` };
  if (run.status === 'open') {
    throw new HostsmithError(
      `run ${runId} has not finished (no run-finished in its journal): it may still be running, or its controller stopped. See \`hostsmith show ${runId}\`; undo takes back finished runs only.`,
      2,
    );
  }
  if (hosts) {
    const unknown = hosts.filter((h) => !run.hosts.some((x) => x.name === h));
    if (unknown.length) throw new InputError(`--hosts: run ${runId} did not run on ${unknown.join(', ')} (its hosts: ${run.hostNames.join(', ')})`);
  }
  // What earlier undo runs already took back (by host and step name, as many times as they did).
  const earlier = await undoRunsOf(stateDir, runId);
  const taken = new Map<string, number>();
  for (const id of earlier) {
    const u = replay((await readJournal(stateDir, id)).entries);
    for (const h of u?.hosts ?? []) for (const s of h.steps) if (s.rollback?.status === 'rolled-back') taken.set(`${h.name}\0${s.name}`, (taken.get(`${h.name}\0${s.name}`) ?? 0) + 1);
  }
  const out: UndoHost[] = [];
  for (const h of run.hosts) {
    if (hosts && !hosts.includes(h.name)) continue;
    // Newest first; an earlier undo took back the newest ones it could.
    const left = [...h.left].reverse().filter((s) => {
      const k = `${h.name}\0${s.name}`;
      const n = taken.get(k) ?? 0;
      if (n > 0) {
        taken.set(k, n - 1);
        return false;
      }
      return true;
    });
    if (left.length) out.push({ host: h, steps: left });
  }
  const target: UndoTarget = { ...base, hosts: out, earlierUndos: earlier };
  // The run's custom step types, imported again only when there is something to take back.
  const types = out.length ? await journaledTypes(usedTypes(extras.types, run), runId, 'undo') : undefined;
  if (types) target.types = types;
  if (!out.length) {
    const scope = hosts ? ` on ${hosts.join(', ')}` : '';
    const why = earlier.length
      ? `it was already undone (by run ${earlier.join(', ')})`
      : run.hosts.some((h) => h.steps.some((s) => s.completed))
        ? `everything it changed was already rolled back (${run.status})`
        : `it changed nothing (${run.status})`;
    target.nothing = `nothing to undo for run ${runId}${scope}: ${why}.`;
    return target;
  }
  const needs = out.some((h) => h.steps.some((s) => s.undo !== null && (holdsMask(s.params) || holdsMask(s.undo))));
  if (needs) target.needsSecrets = Object.keys(target.secrets).sort();
  return target;
}

/** A journaled step's footprint; journal data a type cannot read counts as touching anything. */
function journaledFootprint(s: StepState): { reads: string[]; wrote: string[] } {
  const type = stepType(s.type);
  try {
    if (type) return { reads: type.footprint(s.params).reads, wrote: changeWrites(type, s.params, s.undo ?? null) };
  } catch {
    // params of another hostsmith's shape
  }
  return { reads: [ANYTHING], wrote: [ANYTHING] };
}

/** Is the step's state on the host still what the run left? Undefined: yes; else the difference. */
async function driftOf(on: JournaledHost, ready: ReadyStep): Promise<string | undefined> {
  const { step } = ready;
  // Its rollback changes nothing, so no later change can make it wrong (a host rebooted again since).
  if (ready.type.nothingToRollBack) return undefined;
  if (!step.post) return 'the run journaled no post-state for this step, so a change since cannot be ruled out';
  const now = await stateNow(contextOf(on, step, ready.sudo), ready);
  if (now === step.post) return undefined;
  return `its state changed since the run (someone, or a later run, changed it): now ${now.slice(0, 12)}…, the run left ${step.post.slice(0, 12)}…`;
}

/**
 * Step 2: connects to each host and checks each step to undo. `given`: secret values, already
 * checked against their digests. Writes nothing.
 */
export async function readHosts(target: UndoTarget, options: { connect(host: HostState): Promise<ShellTransport>; secrets?: Record<string, string>; concurrency?: number }): Promise<HostCheck[]> {
  return withStepTypes(target.types?.types, () => readHostsIn(target, options));
}

async function readHostsIn(target: UndoTarget, options: { connect(host: HostState): Promise<ShellTransport>; secrets?: Record<string, string>; concurrency?: number }): Promise<HostCheck[]> {
  const given = options.secrets ?? {};
  const checks: HostCheck[] = target.hosts.map((undo) => ({ name: undo.host.name, host: undo.host, ready: [], problems: [] }));
  await pool([...checks.keys()], options.concurrency ?? 10, async (index) => {
    const check = checks[index]!;
    const { host, steps } = target.hosts[index]!;
    try {
      const transport = await options.connect(host);
      check.transport = transport;
      const facts = await gatherFacts(transport);
      transport.identify(facts.user);
      check.facts = facts;
      await checkSteps(check, steps, { host, transport, facts, runId: target.run.runId, command: 'undo' }, { secrets: target.secrets, given });
    } catch (e) {
      check.error = errorMessage(e);
    }
  });
  return checks;
}

/** Each step to undo on one host, newest first: ready, or a problem that says why not. */
async function checkSteps(check: HostCheck, steps: StepState[], on: JournaledHost, secrets: { secrets: SecretDigests; given: Record<string, string> }): Promise<void> {
  // What the run's newer steps may have written (newest first, as they are undone). A step
  // whose reads they meet was moved by the run itself (a user joining the group a step
  // before made): its state is judged at its turn, once the newer ones are rolled back.
  const newerWrites: string[] = [];
  for (const step of steps) {
    const problem = (kind: UndoProblem['kind'], message: string) => check.problems.push({ host: check.name, step: step.name, type: step.type, kind, message });
    const footprint = journaledFootprint(step);
    const movedByNewer = meets(newerWrites, footprint.reads);
    // Only what a newer step names excuses a change: a command or a package "may write
    // anything", and letting that excuse every older step would hide real drift.
    newerWrites.push(...footprint.wrote.filter((written) => written !== ANYTHING && !written.endsWith(':*')));
    if (step.undo === null || step.undo === undefined) {
      problem('irreversible', `irreversible: ${stepType(step.type)?.irreversibleWhy ?? 'the step has no rollback'}, so its change (${step.summary}) cannot be taken back`);
      continue;
    }
    const journaled = journaledStep(on.host, step, secrets.secrets, secrets.given);
    if (!('ready' in journaled)) {
      problem(journaled.problem, journaled.message);
      continue;
    }
    try {
      const drift = await driftOf(on, journaled.ready);
      // Moved, but maybe by the run's own newer step: judged at its turn, once those are back.
      if (drift && !movedByNewer) problem('drift', drift);
      else check.ready.push(journaled.ready);
    } catch (e) {
      if (e instanceof ConnectError) throw e;
      problem('unreadable', `its state could not be read: ${errorMessage(e)}`);
    }
  }
}

export interface UndoHostReport extends Counts {
  status: HostStatus;
  /** Steps rolled back, newest first. */
  rolledBackSteps: string[];
  /** Steps not rolled back (drift or irreversible under --force, or whose rollback failed), with why. */
  skippedSteps: Array<{ step: string; why: string }>;
  error?: string;
}

export interface UndoReport {
  runId: string;
  undoes: string;
  status: RunStatus;
  exitCode: number;
  journalFile: string;
  hosts: Record<string, UndoHostReport>;
}

export interface UndoOptions {
  force?: boolean;
  /** Secret values, masked out of the undo run's journal, events and report. */
  secretValues?: string[];
  /** Values of the undone run's secret vars, already checked against their digests. */
  secrets?: Record<string, string>;
  emit?: Emit;
  runId?: string;
  hostStateDir?: string;
  rootLockDir?: string;
}

/**
 * Step 3: the undo run. Without `force`, any problem (or host that could not be read) is for the
 * caller to refuse on before calling this; with it, problem steps are skipped and reported.
 */
export async function runUndo(target: UndoTarget, checks: HostCheck[], options: UndoOptions): Promise<UndoReport> {
  const runId = options.runId ?? newRunId();
  const names = checks.map((check) => check.name);
  const reports: Record<string, UndoHostReport> = {};
  return withStepTypes(target.types?.types, () =>
    driveRun({
      runId,
      secrets: options.secretValues ?? [],
      emit: options.emit,
      openJournal: (masker) => Journal.create(target.stateDir, runId, masker),
      opening: () => ({
        entry: runStartedEntry({
          runId,
          recipe: target.run.recipe,
          recipeFile: target.run.recipeFile,
          mode: 'undo',
          hosts: names,
          vars: {},
          undoes: target.run.runId,
          // The undone run's secret digests: recovering this undo may need the same values again.
          ...(Object.keys(target.secrets).length ? { secrets: Object.fromEntries(Object.entries(target.secrets).map(([name, digests]) => [name, { sha256: digests }])) } : {}),
          // The same modules: recovering this undo takes its steps back with them too.
          ...(target.types ? { types: target.types.modules } : {}),
        }),
        event: { event: 'run-started', runId, time: isoNow(), recipe: target.run.recipe, mode: 'undo', undoes: target.run.runId, hosts: names },
      }),
      // Hosts are undone one after another, in the order they were read (an undo takes no concurrency).
      work: (frame) =>
        pool(checks, 1, async (check) => {
          const started = Date.now();
          reports[check.name] = await undoHost(check, { target, frame, options });
          await frame.hostFinished(check.name, reports[check.name]!, { durationMs: Date.now() - started });
        }),
      ending: (frame) => {
        const { status, exitCode } = worstStatus(
          names.map((name) => reports[name]!.status),
          false,
        );
        return { finished: { status, exitCode }, result: { runId, undoes: target.run.runId, status, exitCode, journalFile: frame.journal!.file, hosts: reports } };
      },
    }),
  );
}

/** What each host's undo needs of the undo run. */
interface UndoRun {
  /** What is undone, as loadUndo read it. */
  target: UndoTarget;
  frame: RunFrame;
  options: UndoOptions;
}

/** One host's undo: under the host lock, each ready step checked again and rolled back, then its handlers. */
async function undoHost(check: HostCheck, run: UndoRun): Promise<UndoHostReport> {
  const report: UndoHostReport = { status: 'ok', ...zeroCounts(), rolledBackSteps: [], skippedSteps: [] };
  if (!check.transport || !check.facts || check.error) {
    report.status = 'unreachable';
    report.error = `${check.name}: ${check.error ?? 'not connected'}`;
    return report;
  }
  for (const problem of check.problems) skip(report, problem.step, problem.message);
  if (!check.ready.length) {
    report.status = report.skippedSteps.length ? 'rollback-incomplete' : 'ok';
    if (report.skippedSteps.length) report.error = `${check.name}: nothing put back; skipped ${report.skippedSteps.map((skipped) => skipped.step).join(', ')}`;
    return report;
  }
  const on: JournaledHost = { host: check.host, transport: check.transport, facts: check.facts, runId: run.target.run.runId, command: 'undo' };
  const base = hostStateBase(check, run);
  let release: (() => Promise<void>) & { path?: string };
  try {
    // The lock as for apply: root's (/run/hostsmith) with root or sudo, else the login's own.
    const sudo = check.host.target?.sudo === true || check.ready.some((ready) => ready.sudo);
    release = await acquireLock(on.transport, base, run.frame.runId, sudo, { stateDir: run.target.stateDir, ...(run.options.rootLockDir ? { rootLockDir: run.options.rootLockDir } : {}) });
  } catch (e) {
    report.status = 'failed';
    report.error = errorMessage(e);
    for (const ready of check.ready) skip(report, ready.step.name, 'not attempted: the host lock could not be taken');
    return report;
  }
  try {
    await rollBackHost(check, on, run, { base, lock: release.path ?? '' }, report);
  } catch (e) {
    report.failed++;
    report.error = `${check.name}: ${errorMessage(e)}`;
    report.status = e instanceof ConnectError ? 'unreachable' : 'rollback-incomplete';
  } finally {
    await release().catch((e: unknown) => {
      report.error = `${report.error ?? check.name}; ${errorMessage(e)}`;
    });
  }
  if (report.status === 'ok' && (report.skippedSteps.length || report.failed)) report.status = 'rollback-incomplete';
  if (report.status === 'rollback-incomplete' && !report.error)
    report.error = `${check.name}: not everything was put back: ${report.skippedSteps.map((skipped) => `${skipped.step} (${skipped.why})`).join('; ')}`;
  return report;
}

function skip(report: UndoHostReport, step: string, why: string): void {
  report.skipped++;
  report.skippedSteps.push({ step, why });
}

/** Where hostsmith keeps its state on the host: given, or where the undone run kept its backups. */
function hostStateBase(check: HostCheck, run: UndoRun): string {
  const backupDir = check.host.backupDir ?? '';
  const suffix = `/backups/${run.target.run.runId}`;
  return run.options.hostStateDir ?? (backupDir.endsWith(suffix) ? backupDir.slice(0, -suffix.length) : '/var/lib/hostsmith');
}

/** Under the lock: host-started, each ready step rolled back (newest first), then the handlers they notify. */
async function rollBackHost(check: HostCheck, on: JournaledHost, run: UndoRun, lock: { base: string; lock: string }, report: UndoHostReport): Promise<void> {
  const { frame } = run;
  const rec = new Recorder(frame.journal, frame.emit);
  await rec.write({
    kind: 'host-started',
    time: isoNow(),
    host: check.name,
    facts: on.facts,
    backupDir: `${lock.base}/backups/${frame.runId}`,
    lock: lock.lock,
    ...(check.host.target ? { target: check.host.target } : {}),
  });
  frame.emit({ event: 'host-connected', runId: frame.runId, time: isoNow(), host: check.name, facts: on.facts });
  const rolledBack: StepState[] = [];
  for (const ready of check.ready) {
    const outcome = await rollBackReady(on, ready, rec, run);
    if (outcome === 'rolled-back') {
      report.rolledBack++;
      report.rolledBackSteps.push(ready.step.name);
      rolledBack.push(ready.step);
    } else if (outcome === 'failed') {
      report.failed++;
      report.skippedSteps.push({ step: ready.step.name, why: 'its rollback failed (see the journal)' });
    } else skip(report, ready.step.name, outcome.drift);
  }
  // The run's handlers that the rolled-back steps notify run again, so services load what was restored.
  const again = await handlersAgain(on, { rolledBack, secrets: run.target.secrets, given: run.options.secrets ?? {}, rec, eventRunId: frame.runId });
  for (const error of again.errors) {
    report.failed++;
    report.skippedSteps.push({ step: 'handlers', why: error });
  }
}

/**
 * One step: checked again under the lock (nothing may have moved between the reading and now),
 * journaled as a step-started copied from the undone run, then rolled back.
 */
async function rollBackReady(on: JournaledHost, ready: ReadyStep, rec: Recorder, run: UndoRun): Promise<'rolled-back' | 'failed' | { drift: string }> {
  const { step } = ready;
  let drift: string | undefined;
  try {
    drift = await driftOf(on, ready);
  } catch (e) {
    if (e instanceof ConnectError) throw e;
    drift = `its state could not be read: ${errorMessage(e)}`;
  }
  if (drift) return { drift };
  await rec.write({
    kind: 'step-started',
    time: isoNow(),
    host: on.host.name,
    step: step.name,
    type: step.type,
    ...(step.handler ? { handler: true } : {}),
    params: step.params,
    undo: step.undo,
    irreversible: step.irreversible,
    summary: `undo of run ${run.target.run.runId}: ${step.summary}`,
    pre: step.post ?? '',
    sudo: ready.sudo,
    ...(step.user ? { user: step.user } : {}),
    ...(step.notifies ? { notifies: step.notifies } : {}),
  } satisfies JournalEntry);
  return (await rollBackJournaled(on, ready, rec, run.frame.runId)) ? 'rolled-back' : 'failed';
}

/** What undo will roll back, per host, newest first (journal text: escape before printing). */
export function undoLines(checks: HostCheck[]): string[] {
  const out: string[] = [];
  for (const c of checks) {
    if (!c.ready.length) continue;
    out.push(`${c.name}:`);
    for (const r of c.ready) out.push(`  ${r.step.name} [${r.step.type}]: ${undoSummary(r.step.type, r.step.undo)}`);
  }
  return out;
}
