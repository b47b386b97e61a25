/**
 * prune, with the local transport in a temp folder: which runs it picks (older/newer, finished,
 * crashed, running), what it removes (backup folders ending in /backups/<run-id>, then the
 * journal), what it keeps (a host it cannot reach, a folder it may not remove), the tombstone, and
 * what the built CLI's `undo`/`show` of a pruned run say.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { LocalTransport, loadRecipe, runRecipe, type HostTarget } from '../../src/index.js';
import { ConnectError } from '../../src/errors.js';
import { JOURNAL_VERSION, journalFile, type JournalEntry } from '../../src/engine/journal.js';
import type { ControllerProbe } from '../../src/engine/controller.js';
import { prunedNote, pruneRuns, readTombstone, selectPrune, tombstoneFile, unsafeBackupDir } from '../../src/engine/prune.js';
import { hostFinished, hostStarted, runFinished, runStarted } from './journal-entries.js';
import { hostsmith } from '../e2e/cli.js';

const DAY = 86_400_000;
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function setup() {
  const dir = mkdtempSync(join(tmpdir(), 'hostsmith-prune-'));
  dirs.push(dir);
  mkdirSync(join(dir, 'etc'));
  writeFileSync(join(dir, 'etc', 'existing'), 'old content\n');
  writeFileSync(join(dir, 'r.yml'), `name: prune-lib\nvars:\n  word: { default: hi }\nsteps:\n  - name: Conf\n    file: { path: ${dir}/etc/existing, content: "new {{word}}\\n" }\n`);
  return { dir, stateDir: join(dir, 'state'), hostState: join(dir, 'hoststate') };
}

async function apply(dir: string, stateDir: string, hostState: string, word: string): Promise<string> {
  const target: HostTarget = { name: 'here', vars: { word }, sudo: false, connect: async () => new LocalTransport('here') };
  const report = await runRecipe({ recipe: await loadRecipe(join(dir, 'r.yml')), targets: [target], mode: 'apply', stateDir, hostStateDir: hostState, rootLockDir: `${hostState}-runlock` });
  expect(report).toMatchObject({ status: 'ok', exitCode: 0 });
  return report.runId;
}

/** Sets the run-started time of a journal (plain NDJSON) to `daysAgo` days ago. */
function age(stateDir: string, runId: string, daysAgo: number) {
  const f = journalFile(stateDir, runId);
  const lines = readFileSync(f, 'utf8').split('\n');
  const first = JSON.parse(lines[0]!);
  expect(first.kind).toBe('run-started');
  first.time = new Date(Date.now() - daysAgo * DAY).toISOString();
  lines[0] = JSON.stringify(first);
  writeFileSync(f, lines.join('\n'));
}

/** A hand-written journal: one host, backups in `backupDir` (created with a file in it). */
function journal(stateDir: string, runId: string, o: { backupDir: string; pid: number; finished: boolean; host?: string }) {
  const host = o.host ?? 'here';
  const entries: JournalEntry[] = [runStarted([host], { runId, pid: o.pid, controller: 'ctl' }), { ...hostStarted(host), backupDir: o.backupDir } as JournalEntry];
  if (o.finished) entries.push(hostFinished(host, 'ok'), runFinished('ok', 0));
  mkdirSync(join(stateDir, 'runs'), { recursive: true });
  writeFileSync(journalFile(stateDir, runId), entries.map((e) => JSON.stringify({ v: JOURNAL_VERSION, ...e })).join('\n') + '\n');
  mkdirSync(o.backupDir, { recursive: true });
  writeFileSync(join(o.backupDir, 'saved'), 'x'.repeat(1000));
}

const RUNNING_PID = 4242;
const probe: ControllerProbe = {
  here: 'ctl',
  info: (pid) => (pid === RUNNING_PID ? { cmdline: 'node /usr/bin/hostsmith apply', startedAtMs: Date.parse('2024-01-01T00:00:00Z'), zombie: false } : undefined),
};

describe('prune', () => {
  it('prunes old finished and crashed runs, keeps newer and running ones, a host it cannot reach, and a folder it may not remove', async () => {
    const { dir, stateDir, hostState } = setup();
    const oldRun = await apply(dir, stateDir, hostState, 'one');
    const newRun = await apply(dir, stateDir, hostState, 'two');
    for (const id of [oldRun, newRun]) expect(existsSync(join(hostState, 'backups', id))).toBe(true);
    age(stateDir, oldRun, 40);
    age(stateDir, newRun, 2);
    // Hand-written runs, all started in 2024 (old): crashed, running, a bad backup folder, an unreachable host.
    const crashed = '20240101T000000Z-crash1';
    const running = '20240101T000000Z-runs01';
    const bad = '20240101T000000Z-badbad';
    const down = '20240101T000000Z-down01';
    journal(stateDir, crashed, { backupDir: join(hostState, 'backups', crashed), pid: 5151, finished: false });
    journal(stateDir, running, { backupDir: join(hostState, 'backups', running), pid: RUNNING_PID, finished: false });
    journal(stateDir, bad, { backupDir: join(dir, 'etc'), pid: 1, finished: true });
    journal(stateDir, down, { backupDir: join(hostState, 'backups', down), pid: 1, finished: true, host: 'down' });

    const found = await selectPrune(stateDir, 30 * DAY, { probe });
    expect(found.map((c) => c.run.runId).sort()).toEqual([oldRun, crashed, running, bad, down].sort());
    expect(found.find((c) => c.run.runId === running)?.keep).toMatch(/still running/);
    expect(found.find((c) => c.run.runId === crashed)).toMatchObject({ phase: 'crashed' });
    expect(found.filter((c) => c.keep).map((c) => c.run.runId)).toEqual([running]);

    const connect = async (h: { name: string }) => {
      if (h.name === 'down') throw new ConnectError('down', 'connection refused');
      return new LocalTransport(h.name);
    };
    const results = await pruneRuns(
      stateDir,
      found.filter((c) => !c.keep).map((c) => c.run),
      { olderThan: '30d', connect },
    );
    const by = Object.fromEntries(results.map((r) => [r.runId, r]));
    expect(by[oldRun]).toMatchObject({ pruned: true });
    expect(by[oldRun]!.bytes).toBeGreaterThan(0);
    expect(by[crashed]).toMatchObject({ pruned: true });
    expect(by[bad]!.pruned).toBe(false);
    expect(by[bad]!.hosts[0]!.error).toMatch(/does not end in \/backups\//);
    expect(by[down]!.pruned).toBe(false);
    expect(by[down]!.hosts[0]!.error).toMatch(/connection refused/);

    // Removed: the old and crashed runs' backups and journals. Kept: everything else.
    for (const id of [oldRun, crashed]) {
      expect(existsSync(join(hostState, 'backups', id))).toBe(false);
      expect(existsSync(journalFile(stateDir, id))).toBe(false);
    }
    for (const id of [newRun, running, down]) expect(existsSync(join(hostState, 'backups', id))).toBe(true);
    for (const id of [newRun, running, bad, down]) expect(existsSync(journalFile(stateDir, id))).toBe(true);
    expect(readFileSync(join(dir, 'etc', 'existing'), 'utf8')).toBe('new two\n'); // the "bad" folder and its files were left alone

    // The tombstone, and what undo/show say of a pruned run.
    const lines = readFileSync(tombstoneFile(stateDir), 'utf8').trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(await readTombstone(stateDir, oldRun)).toMatchObject({ runId: oldRun, recipe: 'prune-lib', mode: 'apply', hosts: ['here'], olderThan: '30d' });
    expect(await prunedNote(stateDir, oldRun)).toMatch(new RegExp(`run ${oldRun} was pruned on \\d{4}-.*older than 30d.*can no longer be undone`));
    expect(await prunedNote(stateDir, newRun)).toBeUndefined();
    expect(await prunedNote(stateDir, 'never-was')).toBeUndefined();

    // A second pass retries what was kept: the host is back now.
    const again = await selectPrune(stateDir, 30 * DAY, { probe });
    expect(
      again
        .filter((c) => !c.keep)
        .map((c) => c.run.runId)
        .sort(),
    ).toEqual([bad, down].sort());
    const retry = await pruneRuns(
      stateDir,
      again.filter((c) => c.run.runId === down).map((c) => c.run),
      { olderThan: '30d', connect: async (h) => new LocalTransport(h.name) },
    );
    expect(retry[0]).toMatchObject({ runId: down, pruned: true });
    expect(existsSync(join(hostState, 'backups', down))).toBe(false);

    // The built CLI: undo/show of a pruned run say why (exit 2); prune's own input checks.
    const undo = await hostsmith(['undo', oldRun, '--yes', '--state-dir', stateDir]);
    expect(undo.code).toBe(2);
    expect(undo.stderr).toMatch(/was pruned on .*older than 30d.*can no longer be undone/s);
    const show = await hostsmith(['show', crashed, '--state-dir', stateDir]);
    expect(show.code).toBe(2);
    expect(show.stderr).toMatch(new RegExp(`run ${crashed} was pruned on`));
    const unknown = await hostsmith(['undo', '20240101T000000Z-nosuch', '--yes', '--state-dir', stateDir]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).not.toMatch(/pruned/);
  });

  it('CLI: --older-than missing or invalid, and no terminal without --yes, are exit 2 with nothing removed', async () => {
    const { dir, stateDir, hostState } = setup();
    const id = await apply(dir, stateDir, hostState, 'one');
    age(stateDir, id, 40);
    const missing = await hostsmith(['prune', '--state-dir', stateDir]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/--older-than.*30d/);
    const invalid = await hostsmith(['prune', '--older-than', 'a month', '--state-dir', stateDir]);
    expect(invalid.code).toBe(2);
    expect(invalid.stderr).toMatch(/not a duration: use e\.g\./);
    const noTty = await hostsmith(['prune', '--older-than', '30d', '--state-dir', stateDir]);
    expect(noTty.code).toBe(2);
    expect(noTty.stderr).toMatch(/--yes/);
    expect(existsSync(journalFile(stateDir, id))).toBe(true);
    expect(existsSync(join(hostState, 'backups', id))).toBe(true);
    // Newer than the cutoff: nothing to prune, exit 0.
    const none = await hostsmith(['prune', '--older-than', '60d', '--yes', '--state-dir', stateDir]);
    expect(none.code).toBe(0);
    expect(none.stdout).toMatch(/nothing to prune/);
    expect(existsSync(journalFile(stateDir, id))).toBe(true);
  });

  it('refuses any backup folder that does not end in /backups/<run-id>', () => {
    expect(unsafeBackupDir('/var/lib/hostsmith/backups/R1', 'R1')).toBeUndefined();
    expect(unsafeBackupDir('/var/lib/hostsmith/backups/R2', 'R1')).toMatch(/does not end/);
    expect(unsafeBackupDir('/var/lib/hostsmith', 'R1')).toMatch(/does not end/);
    expect(unsafeBackupDir('relative/backups/R1', 'R1')).toMatch(/absolute/);
    expect(unsafeBackupDir('/x/../backups/R1', 'R1')).toMatch(/\.\./);
    expect(unsafeBackupDir('/backups/R1', 'R1')).toMatch(/root/);
  });
});
