/**
 * `undo <run-id>` (SPEC §9): takes back what a finished run left on its hosts, from the journal
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
 *    rollback is. Each step it takes back is first journaled as a `step-started` copied from the
 *    undone run (params and undo data as journaled, `pre` = the undone run's post), so the undo
 *    run's own journal replays as a run whose steps were rolled back, and `recover` can finish it.
 *
 * Secrets: journaled params and undo data are masked (`***`). The apply journals a salted digest of
 * each secret var (run-started `secrets`); a step whose entries hold `***` gets the value back by
 * substitution, after the value given was checked against its digest. It is never written down.
 */
import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { ConnectError, HostsmithError, InputError, errorMessage } from '../errors.js';
import type { ShellTransport } from '../transport/base.js';
import { rollbackOne } from './apply-step.js';
import { worstStatus, type Counts, type Emit, type HostStatus, type RunEvent, type RunStatus } from './events.js';
import { gatherFacts, type Facts } from './facts.js';
import type { Completed, HostRun } from './host-run.js';
import { Journal, journalFile, listRunIds, parseJournal, readJournal, type JournalEntry } from './journal.js';
import { acquireLock } from './lock.js';
import { Masker } from './mask.js';
import { newRunId } from './fleet.js';
import { varDigest } from './plan-value.js';
import { Recorder } from './recorder.js';
import { contextOf, handlersAgain, holdsMask, journaledStep, stateNow, type JournaledStep, type SecretDigests } from './journal-steps.js';
import { replay, undoSummary, type HostState, type RunState, type StepState } from './replay.js';
import type { StepSpec } from '../recipe/types.js';
import { ANYTHING, meets } from '../steps/footprint.js';
import { stepType } from '../steps/registry.js';
import { changeWrites } from '../steps/step.js';

export { MASK, type SecretDigests } from './journal-steps.js';

/** What run-started carries beyond the run state. */
interface StartExtras {
  undoes?: string;
  secrets?: SecretDigests;
}

export interface UndoHost {
  host: HostState;
  /** Steps to take back, newest first. */
  steps: StepState[];
}

export interface UndoTarget {
  stateDir: string;
  run: RunState;
  /** Set when there is nothing to undo: why (exit 0). */
  nothing?: string;
  /** Hosts with something to take back, in the run's order. */
  hosts: UndoHost[];
  /** The undone run's secret vars and their digests. */
  secrets: SecretDigests;
  /** Secret vars whose values the steps to undo need (their entries hold ***). */
  needsSecrets: string[];
  /** Earlier undo runs of this run. */
  earlierUndos: string[];
}

/** One thing that stops the undo of a step: drift, irreversible, a secret that cannot be given back. */
export interface UndoProblem {
  host: string;
  step: string;
  type: string;
  kind: 'drift' | 'irreversible' | 'secret' | 'unknown-type' | 'unreadable';
  message: string;
}

/** A host read and checked: its connection stays open for runUndo. */
export interface HostCheck {
  name: string;
  host: HostState;
  transport?: ShellTransport;
  facts?: Facts;
  /** Steps that can be taken back, newest first, with what their rollback gets. */
  ready: ReadyStep[];
  problems: UndoProblem[];
  /** Connecting or reading failed: nothing can be done on this host. */
  error?: string;
}

/** A step that can be taken back: params and undo data with secrets given back. */
export type ReadyStep = JournaledStep;

/** What a run-started entry says beyond the run state: the run it undoes, its secrets' digests. */
function extrasOf(e: JournalEntry | undefined): StartExtras {
  if (e?.kind !== 'run-started') return {};
  return {
    ...(e.undoes ? { undoes: e.undoes } : {}),
    ...(e.secrets ? { secrets: Object.fromEntries(Object.entries(e.secrets).map(([name, v]) => [name, v.sha256])) } : {}),
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
async function driftOf(t: ShellTransport, facts: Facts, h: HostState, s: StepState, r: ReadyStep, runId: string): Promise<string | undefined> {
  if (!s.post) return 'the run journaled no post-state for this step, so a change since cannot be ruled out';
  const now = await stateNow(contextOf(t, facts, h, s, r.sudo, runId), r);
  if (now === s.post) return undefined;
  return `its state changed since the run (someone, or a later run, changed it): now ${now.slice(0, 12)}…, the run left ${s.post.slice(0, 12)}…`;
}

/**
 * Step 2: connects to each host and checks each step to undo. `given`: secret values, already
 * checked against their digests. Writes nothing.
 */
export async function readHosts(
  t: UndoTarget,
  o: { connect(h: HostState): Promise<ShellTransport>; secrets?: Record<string, string>; concurrency?: number },
): Promise<HostCheck[]> {
  const given = o.secrets ?? {};
  const checks: HostCheck[] = t.hosts.map((u) => ({ name: u.host.name, host: u.host, ready: [], problems: [] }));
  let next = 0;
  const worker = async () => {
    while (next < checks.length) {
      const c = checks[next]!;
      const u = t.hosts[next++]!;
      try {
        const transport = await o.connect(u.host);
        c.transport = transport;
        const facts = await gatherFacts(transport);
        transport.loginUser = facts.user;
        transport.defaultSudo = false;
        c.facts = facts;
        // What the run's newer steps may have written (newest first, as they are undone). A step
        // whose reads they meet was moved by the run itself (a user joining the group a step
        // before made): its state is judged at its turn, once the newer ones are put back.
        const newerWrites: string[] = [];
        for (const s of u.steps) {
          const problem = (kind: UndoProblem['kind'], message: string) => c.problems.push({ host: c.name, step: s.name, type: s.type, kind, message });
          const fp = journaledFootprint(s);
          const movedByNewer = meets(newerWrites, fp.reads);
          // Only what a newer step names excuses a change: a command or a package "may write
          // anything", and letting that excuse every older step would hide real drift.
          newerWrites.push(...fp.wrote.filter((w) => w !== ANYTHING && !w.endsWith(':*')));
          if (s.undo === null || s.undo === undefined) {
            problem('irreversible', `irreversible: ${stepType(s.type)?.irreversibleWhy ?? 'the step has no rollback'}, so its change (${s.summary}) cannot be taken back`);
            continue;
          }
          const j = journaledStep(u.host, s, t.secrets, given);
          if (!('ready' in j)) {
            problem(j.problem, j.message);
            continue;
          }
          const r: ReadyStep = j.ready;
          try {
            const d = await driftOf(transport, facts, u.host, s, r, t.run.runId);
            // Moved, but maybe by the run's own newer step: judged at its turn, once those are back.
            if (d && movedByNewer) c.ready.push(r);
            else if (d) problem('drift', d);
            else c.ready.push(r);
          } catch (e) {
            if (e instanceof ConnectError) throw e;
            problem('unreadable', `its state could not be read: ${errorMessage(e)}`);
          }
        }
      } catch (e) {
        c.error = errorMessage(e);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(o.concurrency ?? 10, checks.length)) }, worker));
  return checks;
}

export interface UndoHostReport extends Counts {
  status: HostStatus;
  /** Steps put back, newest first. */
  rolledBackSteps: string[];
  /** Steps not put back (drift or irreversible under --force, or whose rollback failed), with why. */
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

/**
 * Step 3: the undo run. Without `force`, any problem (or host that could not be read) is for the
 * caller to refuse on before calling this; with it, problem steps are skipped and reported.
 */
export async function runUndo(
  t: UndoTarget,
  checks: HostCheck[],
  o: { force?: boolean; secretValues?: string[]; secrets?: Record<string, string>; emit?: Emit; runId?: string; hostStateDir?: string; rootLockDir?: string },
): Promise<UndoReport> {
  const runId = o.runId ?? newRunId();
  const masker = new Masker(o.secretValues ?? []);
  const emit: Emit = (e: RunEvent) => o.emit?.(masker.value(e));
  const time = () => new Date().toISOString();
  const journal = await Journal.create(t.stateDir, runId, masker);
  const names = checks.map((c) => c.name);
  const reports: Record<string, UndoHostReport> = {};
  try {
    const started = {
      kind: 'run-started' as const,
      runId,
      time: time(),
      recipe: t.run.recipe,
      recipeFile: t.run.recipeFile,
      mode: 'undo' as const,
      hosts: names,
      vars: {},
      pid: process.pid,
      controller: hostname(),
      undoes: t.run.runId,
      // The undone run's secret digests: recovering this undo may need the same values again.
      ...(Object.keys(t.secrets).length ? { secrets: Object.fromEntries(Object.entries(t.secrets).map(([n, v]) => [n, { sha256: v }])) } : {}),
    };
    await journal.write(started);
    emit({ event: 'run-started', runId, time: time(), recipe: t.run.recipe, mode: 'undo', undoes: t.run.runId, hosts: names });
    for (const c of checks) {
      reports[c.name] = await undoHost(c);
      const r = reports[c.name]!;
      await journal
        .write({ kind: 'host-finished', time: time(), host: c.name, status: r.status, counts: counts(r), ...(r.error ? { error: r.error } : {}) })
        .catch((e: unknown) => {
          r.error = `${r.error ?? c.name}; ${errorMessage(e)}`;
        });
      emit({ event: 'host-finished', runId, time: time(), host: c.name, status: r.status, ...counts(r), ...(r.error ? { error: r.error } : {}), durationMs: 0 });
    }
    const { status, exitCode } = worstStatus(names.map((n) => reports[n]!.status), false);
    await journal.write({ kind: 'run-finished', time: time(), status, exitCode }).catch(() => {});
    return masker.value({ runId, undoes: t.run.runId, status, exitCode, journalFile: journal.file, hosts: reports });
  } finally {
    await journal.close().catch(() => {});
  }

  async function undoHost(c: HostCheck): Promise<UndoHostReport> {
    const r: UndoHostReport = { status: 'ok', changed: 0, unchanged: 0, skipped: 0, failed: 0, rolledBack: 0, rolledBackSteps: [], skippedSteps: [] };
    const skip = (step: string, why: string) => {
      r.skipped++;
      r.skippedSteps.push({ step, why });
    };
    if (!c.transport || !c.facts || c.error) {
      r.status = 'unreachable';
      r.error = `${c.name}: ${c.error ?? 'not connected'}`;
      return r;
    }
    const transport = c.transport;
    const facts = c.facts;
    for (const p of c.problems) skip(p.step, p.message);
    if (!c.ready.length) {
      r.status = r.skippedSteps.length ? 'rollback-incomplete' : 'ok';
      if (r.skippedSteps.length) r.error = `${c.name}: nothing put back; skipped ${r.skippedSteps.map((s) => s.step).join(', ')}`;
      return r;
    }
    // The lock as for apply: root's (/run/hostsmith) with root or sudo, else the login's own.
    const sudo = c.host.target?.sudo === true || c.ready.some((x) => x.sudo);
    const backupDir = c.host.backupDir ?? '';
    const base = o.hostStateDir ?? (backupDir.endsWith(`/backups/${t.run.runId}`) ? backupDir.slice(0, -`/backups/${t.run.runId}`.length) : '/var/lib/hostsmith');
    let release: (() => Promise<void>) & { path?: string };
    try {
      release = await acquireLock(transport, base, runId, sudo, { stateDir: t.stateDir, ...(o.rootLockDir ? { rootLockDir: o.rootLockDir } : {}) });
    } catch (e) {
      r.status = 'failed';
      r.error = errorMessage(e);
      for (const x of c.ready) skip(x.step.name, 'not attempted: the host lock could not be taken');
      return r;
    }
    const rec = new Recorder(journal, emit);
    try {
      await rec.write({
        kind: 'host-started',
        time: time(),
        host: c.name,
        facts,
        backupDir: `${base}/backups/${runId}`,
        lock: release.path ?? '',
        ...(c.host.target ? { target: c.host.target } : {}),
      });
      emit({ event: 'host-connected', runId, time: time(), host: c.name, facts });
      const shim = { o: { host: c.name, runId }, rec } as unknown as HostRun;
      const undone: StepState[] = [];
      for (const x of c.ready) {
        const s = x.step;
        // Checked again under the lock: nothing may have moved between the reading and now.
        let drift: string | undefined;
        try {
          drift = await driftOf(transport, facts, c.host, s, x, t.run.runId);
        } catch (e) {
          if (e instanceof ConnectError) throw e;
          drift = `its state could not be read: ${errorMessage(e)}`;
        }
        if (drift) {
          skip(s.name, drift);
          continue;
        }
        const ctx = contextOf(transport, facts, c.host, s, x.sudo, t.run.runId);
        await rec.write({
          kind: 'step-started',
          time: time(),
          host: c.name,
          step: s.name,
          type: s.type,
          ...(s.handler ? { handler: true } : {}),
          params: s.params,
          undo: s.undo,
          irreversible: s.irreversible,
          summary: `undo of run ${t.run.runId}: ${s.summary}`,
          pre: s.post ?? '',
          sudo: x.sudo,
          ...(s.user ? { user: s.user } : {}),
          ...(s.notifies ? { notifies: s.notifies } : {}),
        } satisfies JournalEntry);
        const done: Completed = { spec: { name: s.name, type: s.type } as StepSpec, type: x.type, params: x.params, undo: x.undo, summary: s.summary, ctx };
        if (await rollbackOne(shim, done)) {
          r.rolledBack++;
          r.rolledBackSteps.push(s.name);
          undone.push(s);
        } else {
          r.failed++;
          r.skippedSteps.push({ step: s.name, why: 'its rollback failed (see the journal)' });
        }
      }
      // The run's handlers that the steps put back notify run again, so services load what was restored.
      const again = await handlersAgain({ host: c.host, rolledBack: undone, transport, facts, runId: t.run.runId, secrets: t.secrets, given: o.secrets ?? {}, rec, eventRunId: runId, command: 'undo' });
      for (const e of again.errors) {
        r.failed++;
        r.skippedSteps.push({ step: 'handlers', why: e });
      }
    } catch (e) {
      r.failed++;
      r.error = `${c.name}: ${errorMessage(e)}`;
      r.status = e instanceof ConnectError ? 'unreachable' : 'rollback-incomplete';
    } finally {
      await release().catch((e: unknown) => {
        r.error = `${r.error ?? c.name}; ${errorMessage(e)}`;
      });
    }
    if (r.status === 'ok' && (r.skippedSteps.length || r.failed)) r.status = 'rollback-incomplete';
    if (r.status === 'rollback-incomplete' && !r.error) r.error = `${c.name}: not everything was put back: ${r.skippedSteps.map((s) => `${s.step} (${s.why})`).join('; ')}`;
    return r;
  }
}

function counts(r: Counts): Counts {
  return { changed: r.changed, unchanged: r.unchanged, skipped: r.skipped, failed: r.failed, rolledBack: r.rolledBack };
}

/** What undo will put back, per host, newest first (journal text: escape before printing). */
export function undoLines(checks: HostCheck[]): string[] {
  const out: string[] = [];
  for (const c of checks) {
    if (!c.ready.length) continue;
    out.push(`${c.name}:`);
    for (const r of c.ready) out.push(`  ${r.step.name} [${r.step.type}]: ${undoSummary(r.step.type, r.step.undo)}`);
  }
  return out;
}
