/**
 * `prune --older-than <duration>` (SPEC §9): forgets old runs. For each run that started longer
 * ago than that and is over (finished, or crashed: its controller is gone), it removes the run's
 * backup folder on each of its hosts, then its journal file, and leaves a tombstone line in
 * `<state-dir>/pruned.ndjson` so `undo`/`show` of that run can say why it is gone.
 *
 * A run still running, or open on another controller (which cannot be checked from here), is never
 * pruned. A host that cannot be reached keeps the run's journal, so a later prune can retry.
 * Only a folder ending in `/backups/<run-id>` is ever removed.
 */
import { appendFile, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { errorMessage } from '../errors.js';
import type { ShellTransport } from '../transport/base.js';
import { quote } from '../shell/script.js';
import { controllerState, localProbe, type ControllerProbe } from './controller.js';
import { journalFile, listRunIds, readJournal } from './journal.js';
import { replay, runPhase, type HostState, type RunPhase, type RunState } from './replay.js';

/** One line of `<state-dir>/pruned.ndjson`. */
export interface Tombstone {
  runId: string;
  recipe: string;
  mode: string;
  hosts: string[];
  started: string;
  pruned: string;
  /** The --older-than given, as typed. */
  olderThan: string;
}

export function tombstoneFile(stateDir: string): string {
  return join(stateDir, 'pruned.ndjson');
}

/** The tombstone of `runId`, when it was pruned (the last line naming it). */
export async function readTombstone(stateDir: string, runId: string): Promise<Tombstone | undefined> {
  let text: string;
  try {
    text = await readFile(tombstoneFile(stateDir), 'utf8');
  } catch {
    return undefined;
  }
  let found: Tombstone | undefined;
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      const t = JSON.parse(line) as Tombstone;
      if (t && t.runId === runId) found = t;
    } catch {
      // a torn line: skip it
    }
  }
  return found;
}

export function prunedMessage(t: Tombstone): string {
  return `run ${t.runId} was pruned on ${t.pruned} (older than ${t.olderThan}): its journal and host backups are gone, so it can no longer be undone or shown. It was a ${t.mode} of recipe ${t.recipe} on ${t.hosts.join(', ')}, started ${t.started}.`;
}

/** Why `runId` has no journal, when prune removed it; undefined when its journal is there or it was never pruned. */
export async function prunedNote(stateDir: string, runId: string): Promise<string | undefined> {
  if (
    await stat(journalFile(stateDir, runId)).then(
      () => true,
      () => false,
    )
  )
    return undefined;
  const t = await readTombstone(stateDir, runId);
  return t ? prunedMessage(t) : undefined;
}

/** A run old enough, and what prune decided about it. */
export interface PruneCandidate {
  run: RunState;
  phase: RunPhase;
  /** Set when the run is kept: why. */
  keep?: string;
}

/** The run id an undo run undoes (first journal line, raw: the common schema drops it). */
async function undoesOf(stateDir: string, runId: string): Promise<string | undefined> {
  try {
    const first = JSON.parse((await readFile(journalFile(stateDir, runId), 'utf8')).split('\n', 1)[0] ?? '') as { undoes?: unknown };
    return typeof first.undoes === 'string' ? first.undoes : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Runs that started before `now - olderThanMs`, oldest first, each with `keep` set when it must
 * not be pruned (running, open elsewhere, or an undo of a run that is kept).
 */
export async function selectPrune(stateDir: string, olderThanMs: number, o: { now?: number; probe?: ControllerProbe } = {}): Promise<PruneCandidate[]> {
  const cutoff = (o.now ?? Date.now()) - olderThanMs;
  const out: PruneCandidate[] = [];
  for (const id of await listRunIds(stateDir)) {
    let run: RunState | undefined;
    try {
      run = replay((await readJournal(stateDir, id)).entries);
    } catch {
      continue;
    }
    if (!run) continue;
    const started = Date.parse(run.startedAt);
    if (!Number.isFinite(started) || started >= cutoff) continue;
    const controller =
      run.status === 'open' ? controllerState({ controller: run.controller, pid: run.pid, since: run.startedAt, runId: run.runId }, o.probe ?? localProbe) : ({ kind: 'elsewhere' } as const);
    const phase = runPhase(run, controller);
    const c: PruneCandidate = { run, phase };
    if (phase === 'running') c.keep = `still running (pid ${run.pid})`;
    else if (phase === 'open') c.keep = `no end in its journal and it ran from another controller (${run.controller}), which cannot be checked from here`;
    out.push(c);
  }
  // An undo run records what it took back: while the run it undid keeps its journal, so does it
  // (else `undo` of that run would no longer know what was already taken back).
  const pruned = new Set(out.filter((c) => !c.keep).map((c) => c.run.runId));
  const all = new Set(await listRunIds(stateDir));
  for (const c of out) {
    if (c.keep || c.run.mode !== 'undo') continue;
    const of = await undoesOf(stateDir, c.run.runId);
    if (of && all.has(of) && !pruned.has(of)) c.keep = `it undid run ${of}, which is kept (not older than the cutoff, or kept itself)`;
  }
  return out.sort((a, b) => a.run.startedAt.localeCompare(b.run.startedAt) || a.run.runId.localeCompare(b.run.runId));
}

/** The backup folders a run may have left on a host: its own, and root's for sudo steps of a login that kept its own. */
export function backupDirsOf(h: HostState, runId: string): string[] {
  const dir = h.backupDir;
  if (!dir) return [];
  const dirs = [dir];
  const root = `/var/lib/hostsmith/backups/${runId}`;
  if (h.steps.some((s) => s.sudo) && dir.includes('/.local/state/hostsmith/') && dir !== root) dirs.push(root);
  return dirs;
}

/** Why `dir` may not be removed as run `runId`'s backups, or undefined when it may. */
export function unsafeBackupDir(dir: string, runId: string): string | undefined {
  if (!dir.startsWith('/')) return `"${dir}" is not an absolute path`;
  if (!dir.endsWith(`/backups/${runId}`)) return `"${dir}" does not end in /backups/${runId}`;
  if (dir.split('/').some((p) => p === '..' || p === '.')) return `"${dir}" holds a . or .. part`;
  if (dir === `/backups/${runId}`) return `"${dir}" is at the root of the file system`;
  return undefined;
}

export interface PrunedHost {
  host: string;
  /** Folders removed (or already gone) and the bytes they held. */
  removed: Array<{ dir: string; bytes: number; absent: boolean }>;
  error?: string;
}

export interface PruneResult {
  runId: string;
  recipe: string;
  hosts: PrunedHost[];
  /** The journal was removed and the tombstone written. */
  pruned: boolean;
  bytes: number;
}

/** Removes one backup folder on a host: `removed <bytes>` or `absent`. */
async function removeDir(t: ShellTransport, dir: string, sudo: boolean): Promise<{ bytes: number; absent: boolean }> {
  const d = quote(dir);
  const script = `if [ -e ${d} ] || [ -L ${d} ]; then b=$(du -sb -- ${d} 2>/dev/null | cut -f1); rm -rf -- ${d} || exit 1; if [ -e ${d} ]; then echo "still there" >&2; exit 1; fi; echo "removed \${b:-0}"; else echo absent; fi`;
  const r = await t.exec(script, { sudo });
  if (r.code !== 0) throw new Error(`cannot remove ${dir}: ${(r.stderr || r.stdout).trim() || `exit ${r.code}`}`);
  const m = /removed (\d+)/.exec(r.stdout);
  return m ? { bytes: Number(m[1]), absent: false } : { bytes: 0, absent: true };
}

/**
 * Prunes the runs selected (those without `keep`): backups on every host first, then the journal
 * and the tombstone. A host that fails keeps the run's journal. `connect` reaches a host as the
 * run's journal says.
 */
export async function pruneRuns(
  stateDir: string,
  runs: RunState[],
  o: { olderThan: string; connect(h: HostState): Promise<ShellTransport>; now?: () => Date; onHost?(runId: string, h: PrunedHost): void },
): Promise<PruneResult[]> {
  const results: PruneResult[] = [];
  const now = o.now ?? (() => new Date());
  // One connection per host as reached, shared by the runs that used it (a failure too: no retry storm).
  const conns = new Map<string, Promise<ShellTransport>>();
  const connect = (h: HostState) => {
    const key = JSON.stringify(h.target ?? { name: h.name });
    let c = conns.get(key);
    if (!c) {
      c = o.connect(h).then(async (t) => {
        const who = await t.exec('id -un', { sudo: false });
        t.identify(who.stdout.trim() || undefined);
        return t;
      });
      c.catch(() => {});
      conns.set(key, c);
    }
    return c;
  };
  for (const run of runs) {
    const res: PruneResult = { runId: run.runId, recipe: run.recipe, hosts: [], pruned: false, bytes: 0 };
    for (const h of run.hosts) {
      const ph: PrunedHost = { host: h.name, removed: [] };
      const dirs = backupDirsOf(h, run.runId);
      const bad = dirs.map((d) => unsafeBackupDir(d, run.runId)).find(Boolean);
      if (bad) ph.error = `refused: the journal's backup folder ${bad}, so it is not removed (remove the run's backups by hand, then its journal ${journalFile(stateDir, run.runId)})`;
      else if (dirs.length) {
        try {
          const t = await connect(h);
          for (const dir of dirs) {
            const sudo = h.target?.sudo === true || h.steps.some((s) => s.sudo) || dir.startsWith('/var/lib/hostsmith/');
            ph.removed.push({ dir, ...(await removeDir(t, dir, sudo)) });
          }
        } catch (e) {
          ph.error = errorMessage(e);
        }
      }
      res.hosts.push(ph);
      res.bytes += ph.removed.reduce((a, x) => a + x.bytes, 0);
      o.onHost?.(run.runId, ph);
    }
    if (res.hosts.every((h) => !h.error)) {
      const t: Tombstone = { runId: run.runId, recipe: run.recipe, mode: run.mode, hosts: run.hostNames, started: run.startedAt, pruned: now().toISOString(), olderThan: o.olderThan };
      await appendFile(tombstoneFile(stateDir), JSON.stringify(t) + '\n', { mode: 0o600 });
      await rm(journalFile(stateDir, run.runId), { force: true });
      res.pruned = true;
    }
    results.push(res);
  }
  return results;
}
