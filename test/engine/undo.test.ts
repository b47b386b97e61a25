/**
 * `undo` from the journal alone, with the local transport in a temp folder: apply a recipe with
 * the library API, then take the run back — after deleting the recipe, with drift, with a secret.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { LocalTransport, loadRecipe, runRecipe, type HostTarget } from '../../src/index.js';
import { readJournal } from '../../src/engine/journal.js';
import { replay } from '../../src/engine/replay.js';
import { loadUndo, readHosts, runUndo, secretMatches } from '../../src/engine/undo.js';

const TOKEN = 's3cret-token-42';
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function setup() {
  const dir = mkdtempSync(join(tmpdir(), 'hostsmith-undo-'));
  dirs.push(dir);
  mkdirSync(join(dir, 'templates'));
  mkdirSync(join(dir, 'etc'));
  writeFileSync(join(dir, 'templates', 'app.conf.hbs'), 'name={{word}}\n');
  writeFileSync(join(dir, 'etc', 'main.conf'), '# main\nworkers=2\n');
  writeFileSync(join(dir, 'etc', 'existing'), 'old content\n', { mode: 0o640 });
  const steps = [
    `  - name: Conf\n    file: { path: ${dir}/etc/existing, content: "new {{word}}\\n", mode: "0600" }`,
    `  - name: Tpl\n    template: { src: app.conf.hbs, dest: ${dir}/etc/app/app.conf }`,
    `  - name: Line\n    line: { path: ${dir}/etc/main.conf, line: "workers=8", match: "^workers=" }`,
    `  - name: Mark\n    command: { run: "touch ${dir}/etc/mark-{{token}}", rollback: "rm ${dir}/etc/mark-{{token}}" }`,
  ].join('\n');
  writeFileSync(join(dir, 'r.yml'), `name: undo-lib\nvars:\n  word: { default: hi }\n  token: { secret: true }\nsteps:\n${steps}\n`);
  const target: HostTarget = { name: 'here', vars: { word: 'hi', token: TOKEN }, sudo: false, connect: async () => new LocalTransport('here') };
  return { dir, target, stateDir: join(dir, 'state') };
}

/** What the test's files are: content and mode of each, and whether the created ones exist. */
function snapshot(dir: string) {
  const f = (p: string) => (existsSync(join(dir, p)) ? `${readFileSync(join(dir, p), 'utf8')}|${(statSync(join(dir, p)).mode & 0o777).toString(8)}` : 'absent');
  return { existing: f('etc/existing'), main: f('etc/main.conf'), app: f('etc/app/app.conf'), appDir: existsSync(join(dir, 'etc/app')), mark: f(`etc/mark-${TOKEN}`) };
}

async function apply(dir: string, target: HostTarget, stateDir: string) {
  const recipe = await loadRecipe(join(dir, 'r.yml'));
  const report = await runRecipe({ recipe, targets: [target], mode: 'apply', stateDir, hostStateDir: join(dir, 'hoststate'), rootLockDir: join(dir, 'runlock'), secrets: [TOKEN] });
  expect(report).toMatchObject({ status: 'ok', exitCode: 0 });
  return report.runId;
}

const connect = async () => new LocalTransport('here');

describe('undo', () => {
  it('takes a run back from the journal alone (recipe deleted), then has nothing to undo', async () => {
    const { dir, target, stateDir } = setup();
    const before = snapshot(dir);
    const runId = await apply(dir, target, stateDir);
    expect(snapshot(dir)).not.toEqual(before);
    rmSync(join(dir, 'r.yml'));
    rmSync(join(dir, 'templates'), { recursive: true });

    const t = await loadUndo(stateDir, runId);
    expect(t.nothing).toBeUndefined();
    expect(t.hosts[0]!.steps.map((s) => s.name)).toEqual(['Mark', 'Line', 'Tpl', 'Conf']);
    // The command's undo data held the secret: journaled masked, so undo needs it back.
    expect(t.needsSecrets).toEqual(['token']);
    expect(secretMatches(t, 'token', 'wrong')).toBe(false);
    expect(secretMatches(t, 'token', TOKEN)).toBe(true);

    // Without the secret, the step cannot be put back: a problem, nothing changed.
    const without = await readHosts(t, { connect });
    expect(without[0]!.problems.map((p) => [p.step, p.kind])).toEqual([['Mark', 'secret']]);

    const checks = await readHosts(t, { connect, secrets: { token: TOKEN } });
    expect(checks[0]!.problems).toEqual([]);
    const t0 = Date.now();
    const events: Array<{ event: string; durationMs?: number }> = [];
    const r = await runUndo(t, checks, { secretValues: [TOKEN], hostStateDir: join(dir, 'hoststate'), rootLockDir: join(dir, 'runlock'), emit: (e) => void events.push(e as (typeof events)[number]) });
    const took = Date.now() - t0;
    expect(r).toMatchObject({ status: 'ok', exitCode: 0, undoes: runId });
    expect(r.hosts.here!.rolledBackSteps).toEqual(['Mark', 'Line', 'Tpl', 'Conf']);
    expect(snapshot(dir)).toEqual(before);

    // The undo run's journal: mode undo, naming the run, its rollbacks replay as rolled back; no secret in it.
    const text = readFileSync(r.journalFile, 'utf8');
    expect(text).not.toContain(TOKEN);
    expect(JSON.parse(text.split('\n')[0]!)).toMatchObject({ kind: 'run-started', mode: 'undo', undoes: runId });
    // The host's time is the time its undo took (four rollbacks through a shell each: not 0 ms).
    const finished = events.find((e) => e.event === 'host-finished');
    expect(finished?.durationMs).toBeGreaterThan(0);
    expect(finished?.durationMs).toBeLessThanOrEqual(took);
    const u = replay((await readJournal(stateDir, r.runId)).entries)!;
    expect(u.mode).toBe('undo');
    expect(u.anomalies).toEqual([]);
    expect(u.hosts[0]!.steps.map((s) => [s.name, s.rollback?.status])).toEqual([
      ['Mark', 'rolled-back'],
      ['Line', 'rolled-back'],
      ['Tpl', 'rolled-back'],
      ['Conf', 'rolled-back'],
    ]);
    expect(u.left).toEqual([]);

    expect((await loadUndo(stateDir, runId)).nothing).toMatch(/nothing to undo .*already undone \(by run /);
    expect((await loadUndo(stateDir, r.runId)).nothing).toMatch(/itself an undo/);
  });

  it('refuses on drift, naming the step; --force puts back the rest and reports the skipped step', async () => {
    const { dir, target, stateDir } = setup();
    const runId = await apply(dir, target, stateDir);
    writeFileSync(join(dir, 'etc/main.conf'), '# edited by hand\nworkers=16\n');
    const edited = snapshot(dir);

    const t = await loadUndo(stateDir, runId);
    const checks = await readHosts(t, { connect, secrets: { token: TOKEN } });
    expect(checks[0]!.problems.map((p) => [p.host, p.step, p.kind])).toEqual([['here', 'Line', 'drift']]);
    expect(checks[0]!.problems[0]!.message).toMatch(/changed since the run/);
    expect(snapshot(dir)).toEqual(edited); // reading changed nothing

    const r = await runUndo(t, checks, { force: true, secretValues: [TOKEN], hostStateDir: join(dir, 'hoststate'), rootLockDir: join(dir, 'runlock') });
    expect(r).toMatchObject({ status: 'rollback-incomplete', exitCode: 3 });
    expect(r.hosts.here!.rolledBackSteps).toEqual(['Mark', 'Tpl', 'Conf']);
    expect(r.hosts.here!.skippedSteps.map((s) => s.step)).toEqual(['Line']);
    const now = snapshot(dir);
    expect(now).toMatchObject({ existing: 'old content\n|640', app: 'absent', appDir: false, mark: 'absent' });
    expect(now.main).toBe('# edited by hand\nworkers=16\n|644');

    // Only the skipped step is left to undo, and it still drifts.
    const again = await loadUndo(stateDir, runId);
    expect(again.hosts[0]!.steps.map((s) => s.name)).toEqual(['Line']);
  });

  it('refuses undo data that names another path than its step (a tampered journal), doing nothing for that step', async () => {
    const { dir, target, stateDir } = setup();
    const runId = await apply(dir, target, stateDir);
    writeFileSync(join(dir, 'etc/victim'), 'victim\n');
    const file = join(stateDir, 'runs', `${runId}.ndjson`);
    // The Conf step's undo data now points at another file: restoring it there would overwrite it.
    const lines = readFileSync(file, 'utf8')
      .split('\n')
      .map((l) => {
        if (!l.includes('"step-started"') || !l.includes('"Conf"')) return l;
        const e = JSON.parse(l);
        e.undo.path = join(dir, 'etc/victim');
        return JSON.stringify(e);
      });
    writeFileSync(file, lines.join('\n'));
    const t = await loadUndo(stateDir, runId);
    const checks = await readHosts(t, { connect, secrets: { token: TOKEN } });
    expect(checks[0]!.problems.map((p) => [p.step, p.kind])).toEqual([['Conf', 'corrupt']]);
    expect(checks[0]!.problems[0]!.message).toMatch(/corrupt journal: its undo data is for ".*victim", not the step's .*existing/);
    expect(readFileSync(join(dir, 'etc/victim'), 'utf8')).toBe('victim\n');
  });

  it('a run fully rolled back has nothing to undo; an unknown run is exit 2', async () => {
    const { dir, target, stateDir } = setup();
    writeFileSync(join(dir, 'r.yml'), `name: fails\nsteps:\n  - name: A\n    file: { path: ${dir}/etc/a, content: "a" }\n  - name: Fail\n    command: { run: "exit 3" }\n`);
    const recipe = await loadRecipe(join(dir, 'r.yml'));
    const report = await runRecipe({ recipe, targets: [target], mode: 'apply', stateDir, hostStateDir: join(dir, 'hoststate'), rootLockDir: join(dir, 'runlock') });
    expect(report).toMatchObject({ status: 'rolled-back', exitCode: 1 });
    expect((await loadUndo(stateDir, report.runId)).nothing).toMatch(/already rolled back/);
    await expect(loadUndo(stateDir, '20990101T000000Z-abcdef')).rejects.toMatchObject({ exitCode: 2 });
  });
});
