/**
 * Plans as values, with the local transport in a temp folder: the plan value of a run, dynamic
 * steps, applying a plan exactly, and refusing a stale one before anything changes.
 */
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { makePlanValue } from '../../src/engine/plan-file.js';
import { newSalt } from '../../src/engine/plan-value.js';
import { LocalTransport, loadRecipe, runRecipe, type HostTarget, type RunEvent } from '../../src/index.js';
import { cronStep } from '../../src/steps/cron/cron.js';
import { fileStep } from '../../src/steps/file/file.js';
import { packageStep } from '../../src/steps/package/package.js';
import { fingerprint, type StepType } from '../../src/steps/step.js';

function setup(steps: string) {
  const dir = mkdtempSync(join(tmpdir(), 'hostsmith-plans-'));
  writeFileSync(join(dir, 'r.yml'), `name: plans\nsteps:\n${steps.replaceAll('$D', dir)}`);
  const target: HostTarget = { name: 'here', vars: {}, sudo: false, connect: async () => new LocalTransport('here') };
  return { dir, target };
}

async function plan(dir: string, target: HostTarget) {
  const recipe = await loadRecipe(join(dir, 'r.yml'));
  const salt = newSalt();
  const events: RunEvent[] = [];
  const report = await runRecipe({
    recipe,
    targets: [target],
    mode: 'plan',
    stateDir: join(dir, 'state'),
    hostStateDir: join(dir, 'hs'),
    rootLockDir: join(dir, 'runlock'),
    salt,
    emit: (e) => events.push(e),
  });
  const value = await makePlanValue(report, { recipe, targets: [target], salt, given: { cli: {}, file: {} }, secret: [], options: {} });
  return { recipe, report, value, events };
}

describe('the plan value of a run', () => {
  it('a step the host refuses now but an earlier change makes possible is known after apply, not failed', async () => {
    const { dir, target } = setup([`  - name: No file\n    file: { path: $D/motd, state: absent }`, `  - name: Link\n    file: { path: $D/motd, state: link, target: $D/issue }`].join('\n') + '\n');
    writeFileSync(join(dir, 'motd'), 'old\n');
    writeFileSync(join(dir, 'issue'), 'issue\n');
    const { value, report } = await plan(dir, target);
    const steps = value.hosts.here!.steps;
    expect(steps.map((s) => [s.name, s.status, s.dynamic])).toEqual([
      ['No file', 'planned', false],
      ['Link', 'planned', true],
    ]);
    expect(steps[1]!.summary).toMatch(/^known after apply \(file depends on: No file\) — now: .*is a file, not a link/);
    expect(report.exitCode).toBe(0);
    // Alone, with nothing before it to change the path, the same step is refused in the plan.
    const alone = setup(`  - name: Link\n    file: { path: $D/motd, state: link, target: $D/issue }\n`);
    writeFileSync(join(alone.dir, 'motd'), 'old\n');
    const refused = await plan(alone.dir, alone.target);
    expect(refused.value.hosts.here!.steps.map((s) => [s.name, s.status])).toEqual([['Link', 'failed']]);
  });

  it("holds every step with its status, params digest and pre-state; a step using a changing step's output is dynamic", async () => {
    const { dir, target } = setup(
      [
        `  - name: Same\n    file: { path: $D/same, content: "s\\n" }`,
        `  - name: New\n    file: { path: $D/new, content: "n\\n" }`,
        `  - name: Id\n    command: { run: "echo abc", rollback: "true" }`,
        `  - name: Uses id\n    file: { path: "$D/{{steps.Id.stdout}}", content: "x\\n" }`,
        `  - name: Reads new\n    line: { path: $D/new, line: "more" }`,
        `  - name: Skipped\n    command: { run: "true" }\n    when: "false"`,
      ].join('\n') + '\n',
    );
    writeFileSync(join(dir, 'same'), 's\n');
    const { value, events } = await plan(dir, target);
    const steps = value.hosts.here!.steps;
    expect(steps.map((s) => [s.name, s.status, s.dynamic])).toEqual([
      ['Same', 'unchanged', false],
      ['New', 'planned', false],
      ['Id', 'planned', false],
      ['Uses id', 'planned', true],
      ['Reads new', 'planned', true],
      ['Skipped', 'skipped', false],
    ]);
    expect(steps[3]!.dependsOn).toEqual(['Id']);
    expect(steps[3]!.summary).toBe('known after apply (file depends on: Id)');
    expect(steps[3]!.pre).toBeUndefined();
    // A command may write anything, and the path of "Uses id" is not known yet: either may be this one.
    expect(steps[4]!.dependsOn).toEqual(['New', 'Id', 'Uses id']);
    for (const s of steps.slice(0, 3)) {
      expect(s.pre, s.name).toMatch(/^[0-9a-f]{64}$/);
      expect(s.paramsDigest, s.name).toMatch(/^sha256:[0-9a-f]{64}$/);
    }
    const ev = events.find((e) => e.event === 'step-finished' && e.step === 'Uses id');
    expect(ev).toMatchObject({ status: 'planned', dynamic: true, dependsOn: ['Id'] });
    expect(existsSync(join(dir, 'new'))).toBe(false);
  });

  it('applies a plan exactly, and refuses a stale one (exit 5) before changing anything', async () => {
    const { dir, target } = setup([`  - name: A\n    file: { path: $D/a, content: "a\\n" }`, `  - name: B\n    file: { path: $D/b, content: "b\\n" }`].join('\n') + '\n');
    const { recipe, value } = await plan(dir, target);
    writeFileSync(join(dir, 'b'), 'someone else\n');
    const stale = await runRecipe({ recipe, targets: [target], mode: 'apply', stateDir: join(dir, 'state'), hostStateDir: join(dir, 'hs'), rootLockDir: join(dir, 'runlock'), expected: value });
    expect(stale).toMatchObject({ status: 'stale', exitCode: 5 });
    expect(stale.hosts.here!.stale).toEqual([expect.stringMatching(/^step "B": its state moved since the plan was made/)]);
    expect(existsSync(join(dir, 'a'))).toBe(false);
    expect(readFileSync(join(dir, 'b'), 'utf8')).toBe('someone else\n');

    const fresh = await plan(dir, target);
    const ok = await runRecipe({ recipe, targets: [target], mode: 'apply', stateDir: join(dir, 'state'), hostStateDir: join(dir, 'hs'), rootLockDir: join(dir, 'runlock'), expected: fresh.value });
    expect(ok).toMatchObject({ status: 'ok', exitCode: 0 });
    expect(readFileSync(join(dir, 'a'), 'utf8')).toBe('a\n');
    expect(readFileSync(join(dir, 'b'), 'utf8')).toBe('b\n');
  });

  it('a step that moves between the up-front check and its turn fails, and the run rolls back', async () => {
    const { dir, target } = setup([`  - name: A\n    file: { path: $D/a, content: "a\\n" }`, `  - name: B\n    file: { path: $D/b, content: "b\\n" }`].join('\n') + '\n');
    const { recipe, value } = await plan(dir, target);
    const events: RunEvent[] = [];
    const r = await runRecipe({
      recipe,
      targets: [target],
      mode: 'apply',
      stateDir: join(dir, 'state'),
      hostStateDir: join(dir, 'hs'),
      rootLockDir: join(dir, 'runlock'),
      expected: value,
      emit: (e) => events.push(e),
      beforeStep: async (_h, step) => {
        if (step === 'B') writeFileSync(join(dir, 'b'), 'meanwhile\n');
      },
    });
    expect(r).toMatchObject({ status: 'rolled-back', exitCode: 1 });
    expect(events.find((e) => e.event === 'step-finished' && e.step === 'B')).toMatchObject({ status: 'failed', error: expect.stringMatching(/not applied: its state moved/) });
    expect(existsSync(join(dir, 'a'))).toBe(false);
    expect(readFileSync(join(dir, 'b'), 'utf8')).toBe('meanwhile\n');
  });
});

describe("state keys: what counts as a step's state for staleness", () => {
  const same = <S>(t: StepType, p: unknown, a: S, b: S) => fingerprint(t.stateKey!(p, a)) === fingerprint(t.stateKey!(p, b));
  const file = (o: Record<string, unknown> = {}) => ({ kind: 'file' as const, mode: 0o644, owner: 'root', group: 'root', content: Buffer.from('x\n'), missing: [] as string[], ...o });

  it('file/template/line: kind, metadata, content and target — not which parents are missing', () => {
    const p = { path: '/etc/x' };
    expect(same(fileStep, p, file({ kind: 'absent', missing: ['/srv', '/srv/a'] }), file({ kind: 'absent', missing: [] }))).toBe(true);
    expect(same(fileStep, p, file(), file({ content: Buffer.from('y\n') }))).toBe(false);
    expect(same(fileStep, p, file(), file({ mode: 0o600 }))).toBe(false);
    expect(same(fileStep, p, file(), file({ owner: 'app' }))).toBe(false);
    expect(same(fileStep, p, file({ kind: 'link', target: '/a' }), file({ kind: 'link', target: '/b' }))).toBe(false);
  });

  it('cron: the crontab and whether the user exists — not the host clock', () => {
    const p = { user: 'root' };
    const at = (now: number, text: string | null, userMissing?: boolean) => ({ user: 'root', text, clock: { now, tz: 'UTC' }, ...(userMissing ? { userMissing } : {}) });
    expect(same(cronStep, p, at(1, 'a\n'), at(99999, 'a\n'))).toBe(true);
    expect(same(cronStep, p, at(1, 'a\n'), at(1, 'b\n'))).toBe(false);
    expect(same(cronStep, p, at(1, null), at(1, null, true))).toBe(false);
  });

  it('package: the named packages and the transaction — not the age of the apt lists, nor other packages', () => {
    const p = { install: ['sl'], remove: [], update_cache: false, cache_valid_time: 3600 };
    const st = (o: Record<string, unknown> = {}) => ({
      dpkg: { sl: { version: '5.02-1', status: 'install ok installed' }, bash: { version: '5.2', status: 'install ok installed' } },
      listsAgeS: 10,
      ...o,
    });
    expect(same(packageStep, p, st(), st({ listsAgeS: 99999 }))).toBe(true);
    expect(same(packageStep, p, st(), st({ dpkg: { sl: { version: '5.02-1', status: 'install ok installed' }, bash: { version: '5.3', status: 'install ok installed' } } }))).toBe(true);
    expect(same(packageStep, p, st(), st({ dpkg: { bash: { version: '5.2', status: 'install ok installed' } } }))).toBe(false);
    expect(same(packageStep, p, st({ sim: { inst: [{ name: 'sl', version: '1' }], remv: [] } }), st({ sim: { inst: [{ name: 'sl', version: '2' }], remv: [] } }))).toBe(false);
  });
});
