/**
 * The library API the CLI is built on, driven with the local transport in a temp folder:
 * events in SPEC §5 order and shape, plan/apply/idempotence, rollback.
 */
import { mkdtempSync, readFileSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LocalTransport, loadRecipe, runRecipe, type RunEvent, type HostTarget } from '../../src/index.js';

function setup(steps: string) {
  const dir = mkdtempSync(join(tmpdir(), 'hostsmith-lib-'));
  writeFileSync(join(dir, 'r.yml'), `name: lib\nvars:\n  word: { default: hi }\n  token: { default: s3cret-token, secret: true }\nsteps:\n${steps.replaceAll('$D', dir)}`);
  const target: HostTarget = { name: 'here', vars: { word: 'hi', token: 's3cret-token' }, sudo: false, connect: async () => new LocalTransport('here') };
  return { dir, target };
}

async function run(dir: string, target: HostTarget, mode: 'plan' | 'apply') {
  const recipe = await loadRecipe(join(dir, 'r.yml'));
  const events: RunEvent[] = [];
  const report = await runRecipe({
    recipe,
    targets: [target],
    mode,
    stateDir: join(dir, 'state'),
    hostStateDir: join(dir, 'hoststate'),
    rootLockDir: join(dir, 'runlock'),
    secrets: ['s3cret-token'],
    emit: (e) => events.push(e),
  });
  return { report, events };
}

describe('runRecipe with the local transport', () => {
  it('emits SPEC §5 events in order, plans without writing, applies, then finds nothing to do', async () => {
    const { dir, target } = setup(
      `  - name: Conf\n    file: { path: $D/out/app.conf, content: "{{word}} {{token}}\\n", mode: "0600" }\n  - name: Echo\n    command: { run: "echo done", rollback: "true" }\n`,
    );
    const plan = await run(dir, target, 'plan');
    expect(plan.events.filter((e) => e.event !== 'step-started').map((e) => e.event)).toEqual(['run-started', 'host-connected', 'step-finished', 'step-finished', 'host-finished', 'run-finished']);
    expect(existsSync(join(dir, 'out'))).toBe(false);
    expect(existsSync(join(dir, 'state'))).toBe(false);
    const conf = plan.events.find((e) => e.event === 'step-finished' && e.step === 'Conf')!;
    expect(conf).toMatchObject({ event: 'step-finished', host: 'here', type: 'file', status: 'planned', irreversible: false });
    expect((conf as { diff?: string }).diff).toBe('(diff hidden: the content holds secret values)\n');
    for (const e of plan.events) expect(e).toMatchObject({ runId: plan.report.runId, time: expect.stringMatching(/^\d{4}-\d\d-\d\dT/) });

    const applied = await run(dir, target, 'apply');
    expect(applied.report).toMatchObject({ status: 'ok', exitCode: 0 });
    expect(readFileSync(join(dir, 'out/app.conf'), 'utf8')).toBe('hi s3cret-token\n');
    expect(statSync(join(dir, 'out/app.conf')).mode & 0o777).toBe(0o600);
    const journal = readFileSync(applied.report.journalFile!, 'utf8');
    expect(journal).not.toContain('s3cret-token');
    expect(
      journal
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).kind),
    ).toEqual([
      // host-started at connect, and again naming the lock taken before the first change.
      'run-started',
      'host-started',
      'host-started',
      'step-started',
      'step-finished',
      'step-started',
      'step-finished',
      'host-finished',
      'run-finished',
    ]);
    const again = await run(dir, target, 'apply');
    expect(again.report.hosts.here).toMatchObject({ status: 'ok', changed: 1, unchanged: 1 }); // the command always runs
  });

  it('rolls back newest first on a fatal failure and reports rolled-back / exit 1', async () => {
    const { dir, target } = setup(`  - name: A\n    file: { path: $D/a, content: "a" }\n  - name: B\n    file: { path: $D/b, content: "b" }\n  - name: Fail\n    command: { run: "exit 4" }\n`);
    const r = await run(dir, target, 'apply');
    expect(r.report).toMatchObject({ status: 'rolled-back', exitCode: 1 });
    expect(r.events.filter((e) => e.event === 'rollback-finished').map((e) => (e as { step: string }).step)).toEqual(['B', 'A']);
    expect(existsSync(join(dir, 'a')) || existsSync(join(dir, 'b'))).toBe(false);
    expect(r.report.hosts.here).toMatchObject({ changed: 2, failed: 1, rolledBack: 2 });
  });

  it('an unreachable host is reported as such, with exit 4, and the others still run', async () => {
    const { dir, target } = setup(`  - name: A\n    file: { path: $D/a, content: "a" }\n`);
    const { ConnectError } = await import('../../src/errors.js');
    const down: HostTarget = {
      name: 'down',
      vars: {},
      sudo: false,
      connect: async () => {
        throw new ConnectError('down', 'connection refused at 10.9.9.9:22');
      },
    };
    const recipe = await loadRecipe(join(dir, 'r.yml'));
    const report = await runRecipe({ recipe, targets: [target, down], mode: 'apply', stateDir: join(dir, 'state'), hostStateDir: join(dir, 'hs'), rootLockDir: join(dir, 'runlock') });
    expect(report.exitCode).toBe(4);
    expect(report.hosts.down).toMatchObject({ status: 'unreachable', error: 'down: connection refused at 10.9.9.9:22' });
    expect(report.hosts.here).toMatchObject({ status: 'ok', changed: 1 });
  });

  it('rolling back a created file whose folder a later step already removed succeeds', async () => {
    const { dir, target } = setup(
      `  - name: Deep\n    file: { path: $D/x/y/f, content: "f" }\n  - name: Wipe\n    command: { run: "rm -rf $D/x", rollback: "true" }\n  - name: Fail\n    command: { run: "exit 1" }\n`,
    );
    const r = await run(dir, target, 'apply');
    expect(r.report).toMatchObject({ status: 'rolled-back', exitCode: 1 });
    expect(r.events.filter((e) => e.event === 'rollback-finished').map((e) => (e as { status: string }).status)).toEqual(['rolled-back', 'rolled-back']);
  });
});

describe('handlers after a rollback', () => {
  it('a handler that ran for a step now rolled back runs again, once, journaled as nothing to undo', async () => {
    const { dir, target } = setup(
      [
        `  - name: Conf\n    file: { path: $D/app.conf, content: "new\\n" }\n    notify: [Record, Boom]`,
        `handlers:`,
        `  - name: Record\n    command: { run: "cat $D/app.conf >> $D/calls", rollback: "true" }`,
        `  - name: Boom\n    command: { run: "exit 3" }`,
      ].join('\n') + '\n',
    );
    writeFileSync(join(dir, 'app.conf'), 'old\n');
    const r = await run(dir, target, 'apply');
    expect(r.report).toMatchObject({ status: 'rolled-back', exitCode: 1 });
    // It ran with the new config, then again with the config put back.
    expect(readFileSync(join(dir, 'calls'), 'utf8')).toBe('new\nold\n');
    expect(readFileSync(join(dir, 'app.conf'), 'utf8')).toBe('old\n');
    const again = r.events.filter((e) => e.event === 'step-finished' && e.step === 'Record').map((e) => (e as { summary: string }).summary);
    expect(again).toEqual(['run: cat ' + join(dir, 'app.conf') + ' >> ' + join(dir, 'calls'), 'after rollback: run: cat ' + join(dir, 'app.conf') + ' >> ' + join(dir, 'calls')]);
    const { readJournal } = await import('../../src/engine/journal.js');
    const { replay } = await import('../../src/engine/replay.js');
    const state = replay((await readJournal(join(dir, 'state'), r.report.runId)).entries);
    expect(state!.left).toEqual([]);
  });

  it('a handler that fails when run again leaves the rollback incomplete (exit 3)', async () => {
    const { dir, target } = setup(
      [
        `  - name: Conf\n    file: { path: $D/app.conf, content: "new\\n" }\n    notify: [Reload, Boom]`,
        `handlers:`,
        `  - name: Reload\n    command: { run: "grep -q new $D/app.conf", rollback: "true" }`,
        `  - name: Boom\n    command: { run: "exit 3" }`,
      ].join('\n') + '\n',
    );
    writeFileSync(join(dir, 'app.conf'), 'old\n');
    const r = await run(dir, target, 'apply');
    expect(r.report).toMatchObject({ status: 'rollback-incomplete', exitCode: 3 });
    const last = r.events.filter((e) => e.event === 'step-finished' && e.step === 'Reload').at(-1) as { status: string; error?: string };
    expect(last.status).toBe('failed');
    expect(last.error).toMatch(/run the handler by hand/);
  });
});
