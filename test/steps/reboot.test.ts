/**
 * `reboot`: params at load, params → footprint, what the host answers → state → plan, and what
 * a rollback that crosses a reboot says. The reboot itself, the wait and the new connection are
 * proved on a booted systemd host (test/e2e/types-reboot.test.ts): nothing here reboots anything.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { StepError } from '../../src/errors.js';
import { parseCheck, parsePoll, planReboot, pollScript, rebootSchema, rebootScript, rebootStep, rollbackNote, type RebootState } from '../../src/steps/reboot/reboot.js';
import { undoMismatch } from '../../src/steps/step.js';
import { localCtx } from './local-ctx.js';

const B1 = '7b80d69c-f6f9-494b-8c7c-95134839ee1a';
const B2 = '03a45893-2a8a-45fa-92a8-43430dddfedc';
const params = (o: Record<string, unknown> = {}) => rebootSchema.parse(o);
const state = (o: Partial<RebootState> = {}): RebootState => ({ host: 'web1', bootId: B1, needed: false, pkgs: '', how: 'systemctl', pid1: 'systemd', root: true, reconnectable: true, ...o });
/** The check script's answer, as the host prints it (NUL between fields). */
const answer = (f: string[]) => f.join('\0');

describe('reboot: params, checked at load', () => {
  it('defaults: wait 300 s, always reboot, no message', () => {
    expect(params()).toEqual({ timeout: 300_000, only_if_needed: false });
  });
  it.each([
    [{ timeout: 90 }, 90_000],
    [{ timeout: '5m' }, 300_000],
    [{ timeout: '1m30s' }, 90_000],
  ])('timeout %j is %d ms', (p, ms) => {
    expect(params(p).timeout).toBe(ms);
  });
  it.each([
    [{ timeout: 0 }, /more than 0/],
    [{ timeout: 'soon' }, /invalid duration/],
    [{ timeout: -5 }, /invalid duration/],
    [{ message: '' }, /at least 1/],
    [{ only_if_needed: 'yes' }, /boolean/],
    [{ reboot_timeout: 600 }, /reboot_timeout/],
  ])('%j is refused', (p, why) => {
    const r = rebootSchema.safeParse(p);
    expect(r.success).toBe(false);
    expect(JSON.stringify(r.error?.issues)).toMatch(why);
  });
});

describe('reboot: footprint', () => {
  it('reads the boot id and the marker; writes what a boot starts afresh, and no file that a boot keeps', () => {
    const f = rebootStep.footprint(params());
    expect(f.reads).toEqual(['path:/proc/sys/kernel/random/boot_id', 'path:/var/run/reboot-required', 'path:/run/systemd/system']);
    expect(f.writes).toEqual(['service:*', 'nft:*', 'path:/run', 'path:/var/run', 'path:/tmp', 'path:/proc', 'path:/sys', 'path:/dev']);
    expect(f.writes.some((w) => w === '*' || w.startsWith('path:/etc') || w.startsWith('path:/srv'))).toBe(false);
  });
});

describe('reboot: what the host answers → state', () => {
  it.each([
    ['systemd', [B1, 'not-needed', '', 'systemctl', 'systemd', '0'], { how: 'systemctl', needed: false, root: true }],
    ['sysvinit with shutdown', [B1, 'needed', 'linux-image-6.1.0-9-amd64 libc6 ', 'shutdown', 'init', '0'], { how: 'shutdown', needed: true, pkgs: 'linux-image-6.1.0-9-amd64 libc6' }],
    ['a container whose PID 1 is tini, with a shutdown binary', [B1, 'not-needed', '', 'shutdown', 'tini', '0'], { how: null, pid1: 'tini' }],
    ['a container with nothing that reboots', [B1, 'not-needed', '', '', 'tini', '0'], { how: null }],
    ['a login that is not root', [B1, 'not-needed', '', 'systemctl', 'systemd', '1000'], { root: false }],
  ])('%s', (_what, fields, want) => {
    expect(parseCheck(answer(fields), { host: 'web1', reconnectable: true })).toMatchObject({ host: 'web1', bootId: B1, ...want });
  });
  it('a boot id that is not one is an error naming the host', () => {
    expect(() => parseCheck(answer(['', 'not-needed', '', '', 'tini', '0']), { host: 'web1', reconnectable: true })).toThrow(/cannot read the boot id of web1/);
  });
  it('the check script reads this machine as it is (boot id, PID 1, uid), without changing anything', async () => {
    const { ctx } = localCtx('hs-reboot-');
    const s = await rebootStep.check(ctx, params());
    expect(s.bootId).toBe(readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim());
    expect(s.root).toBe(process.getuid?.() === 0);
    expect(s.pid1).toBe(readFileSync('/proc/1/comm', 'utf8').trim());
    // The local context has no connection the run could make again.
    expect(s.reconnectable).toBe(false);
    expect(() => rebootStep.plan(params(), s, { runId: 'R1', step: 'S', backupDir: '/b' })).toThrow(/reached without SSH \(local\)/);
  });
});

describe('reboot: plan (params + state → what happens)', () => {
  it('always reboots by default, with the init system’s command, and says a rollback will not undo it', () => {
    const plan = planReboot(params(), state());
    expect(plan).toEqual({
      changed: true,
      summary: 'reboot web1 (systemctl reboot), then wait up to 300 s for a new boot; a rollback of later steps will not undo the reboot',
      undo: { kind: 'reboot', bootBefore: B1 },
      action: 'change',
    });
  });
  it('only_if_needed without the marker: skipped, saying why', () => {
    expect(planReboot(params({ only_if_needed: true }), state())).toEqual({
      changed: false,
      skipped: true,
      summary: 'no reboot needed: /var/run/reboot-required does not exist on web1',
      undo: null,
    });
  });
  it('only_if_needed with the marker: reboots, naming what asked for it', () => {
    const plan = planReboot(params({ only_if_needed: true, timeout: '2m' }), state({ needed: true, pkgs: 'linux-image-amd64', how: 'shutdown', pid1: 'init' }));
    expect(plan.changed).toBe(true);
    expect(plan.summary).toBe(
      'reboot web1 (shutdown -r now; /var/run/reboot-required asks for it (linux-image-amd64)), then wait up to 120 s for a new boot; a rollback of later steps will not undo the reboot',
    );
  });
  it.each([
    ['no init system that reboots (tini)', state({ how: null, pid1: 'tini' }), /web1 cannot be rebooted: its PID 1 is tini, not systemd/],
    ['not root', state({ root: false }), /rebooting web1 needs root: log in as root, or use sudo: true/],
    ['local', state({ reconnectable: false }), /web1 is reached without SSH \(local\)/],
  ])('%s: a step error before any change', (_what, s, why) => {
    expect(() => planReboot(params(), s)).toThrow(StepError);
    expect(() => planReboot(params(), s)).toThrow(why);
  });
  it('a host that cannot reboot but needs no reboot is skipped, not an error', () => {
    expect(planReboot(params({ only_if_needed: true }), state({ how: null, pid1: 'tini' })).skipped).toBe(true);
  });
  it('the state compared for staleness is the boot, and the marker only when the step asks', () => {
    expect(rebootStep.stateKey!(params(), state({ needed: true }))).toEqual({ bootId: B1 });
    expect(rebootStep.stateKey!(params({ only_if_needed: true }), state({ needed: true }))).toEqual({ bootId: B1, needed: true });
  });
});

describe('reboot: the scripts', () => {
  it('asks for the reboot detached, a second later, without the run tag, with the message quoted', () => {
    const sh = rebootScript('systemctl', "it's time; $(touch /tmp/x)", 'R1');
    // The message is one literal word to sh: nothing in it runs.
    const first = sh.split('\n')[0]!;
    expect(execFileSync('sh', ['-c', `${first}; printf %s "$msg"`], { encoding: 'utf8' })).toBe("it's time; $(touch /tmp/x)");
    expect(sh).toContain('env -u HOSTSMITH_RUN setsid sh -c');
    expect(sh).toContain('sleep 1; systemctl reboot > /run/hostsmith-reboot-R1.err');
    // Valid sh (parsed, not run).
    execFileSync('sh', ['-n', '-c', sh]);
  });
  it('a poll reads the boot id, the marker and what a failed reboot command said', async () => {
    const { ctx } = localCtx('hs-reboot-');
    const r = await ctx.exec(pollScript('R-none'));
    expect(r.code).toBe(0);
    expect(parsePoll(r.stdout)).toEqual({ bootId: readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(), needed: expect.any(Boolean), failed: '' });
    expect(parsePoll(`${B2}\nnot-needed\nFailed to reboot: Access denied\nexit 1\n`)).toEqual({ bootId: B2, needed: false, failed: 'Failed to reboot: Access denied\nexit 1' });
  });
  it('the watchdog’s rollback of a reboot does nothing and succeeds; as a handler it is not run again', () => {
    const env = { host: 'h', runId: 'R1', step: 'Reboot', backupDir: '/b', init: 'systemd' as const };
    const out = execFileSync('sh', ['-c', rebootStep.hostRollback!(params(), { kind: 'reboot', bootBefore: B1 }, env)], { encoding: 'utf8' });
    expect(out).toBe('reboot: nothing to roll back; the host was rebooted during the run\n');
    expect(execFileSync('sh', ['-c', rebootStep.hostRun!(params(), env)], { encoding: 'utf8' })).toMatch(/not run again after a rollback/);
  });
});

describe('reboot: rollback says what stays', () => {
  it.each([
    [
      { kind: 'reboot' as const, bootBefore: B1, bootAfter: B2, rebootedAt: '2026-12-07T04:45:03.525Z' },
      undefined,
      'nothing to roll back; the host was rebooted at 2026-12-07T04:45:03.525Z (boot 7b80d69c… → 03a45893…)',
    ],
    [{ kind: 'reboot' as const, bootBefore: B1 }, B2, 'nothing to roll back; the host was rebooted during the run (boot 7b80d69c… → 03a45893…)'],
    [{ kind: 'reboot' as const, bootBefore: B1 }, B1, 'nothing to roll back; the host was not rebooted (it still runs boot 7b80d69c…)'],
  ])('%j, boot now %s', (undo, now, note) => {
    expect(rollbackNote(undo, now)).toBe(note);
  });
  it('the undo summary and the journal check', () => {
    expect(rebootStep.undoSummary!({ kind: 'reboot', bootBefore: B1, rebootedAt: 'T' })).toBe('nothing to roll back: a reboot cannot be undone (the host was rebooted at T)');
    expect(undoMismatch(rebootStep, params(), { kind: 'reboot', bootBefore: B1 })).toBeUndefined();
    expect(undoMismatch(rebootStep, params(), { kind: 'file', path: '/etc/x' })).toMatch(/not a reboot/);
    expect(undoMismatch(rebootStep, params(), { kind: 'reboot', bootBefore: '$(reboot)' })).toMatch(/no boot id/);
    expect(rebootStep.nothingToRollBack).toBe(true);
  });
});
