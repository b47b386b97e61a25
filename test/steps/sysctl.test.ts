import { describe, expect, it } from 'vitest';
import { StepError } from '../../src/errors.js';
import type { PathState } from '../../src/steps/file-state.js';
import { stepTypes } from '../../src/steps/registry.js';
import type { StepContext } from '../../src/steps/step.js';
import { checkScript, editConf, parseSysctlCheck, planSysctl, sysctlSchema, sysctlStep, type SysctlState, type SysctlUndo } from '../../src/steps/sysctl/sysctl.js';

const env = { runId: 'R1', step: 'Forward', backupDir: '/var/lib/hostsmith/backups/R1' };
const params = (o: Record<string, unknown> = {}) => sysctlSchema.parse({ name: 'net.ipv4.ip_forward', value: '1', ...o });
const DEFAULT = '/etc/sysctl.d/99-hostsmith-net.ipv4.ip_forward.conf';
const file = (content: string): PathState => ({ kind: 'file', content: Buffer.from(content), mode: 0o644, owner: 'root', group: 'root', missing: [] });
const absent: PathState = { kind: 'absent', missing: [] };
const st = (live: string | null, f: PathState = absent): SysctlState => ({ live, file: f });

describe('sysctl: params → footprint', () => {
  const rows: Array<[Record<string, unknown>, string[]]> = [
    [{}, [`path:${DEFAULT}`, 'path:/proc/sys/net/ipv4/ip_forward']],
    [{ file: '/etc/sysctl.d/90-hostsmith.conf' }, ['path:/etc/sysctl.d/90-hostsmith.conf', 'path:/proc/sys/net/ipv4/ip_forward']],
    [{ name: 'kernel.domainname', value: 'x', state: 'absent' }, ['path:/etc/sysctl.d/99-hostsmith-kernel.domainname.conf', 'path:/proc/sys/kernel/domainname']],
  ];
  it.each(rows)('%j', (o, items) => {
    expect(stepTypes.sysctl!.footprint(params(o))).toEqual({ reads: items, writes: items });
  });
});

describe('sysctl: params are checked before any host is read', () => {
  it.each([
    [{ name: 'net/ipv4/ip_forward' }, /kernel parameter name/],
    [{ name: 'net.ipv4.*' }, /kernel parameter name/],
    [{ name: 'net..x' }, /kernel parameter name/],
    [{ value: undefined }, /value is required/],
    [{ value: '1\n2' }, /single line/],
    [{ value: '  ' }, /must not be empty/],
    [{ file: 'sysctl.conf' }, /absolute/],
  ])('%j is refused', (o, why) => {
    const r = sysctlSchema.safeParse({ name: 'net.ipv4.ip_forward', value: '1', ...o });
    expect(r.success).toBe(false);
    expect(JSON.stringify(r.error?.issues)).toMatch(why);
  });
  it('a number value is taken as its text; absent needs no value', () => {
    expect(params({ value: 10 }).value).toBe('10');
    expect(sysctlSchema.parse({ name: 'vm.swappiness', state: 'absent' }).apply_live).toBe(true);
  });
});

describe('sysctl: the drop-in edit', () => {
  const rows: Array<[string, Record<string, unknown>, string | null, string | null | 'same']> = [
    ['a new file', {}, null, 'net.ipv4.ip_forward = 1\n'],
    ['a line with the value already (any spacing) stays', {}, 'net.ipv4.ip_forward=1\n', 'same'],
    ['the slash form is the same key', {}, 'net/ipv4/ip_forward = 1\n', 'same'],
    ['another value is replaced in place', {}, '# mine\nnet.ipv4.ip_forward = 0\nvm.swappiness = 10\n', '# mine\nnet.ipv4.ip_forward = 1\nvm.swappiness = 10\n'],
    ['a later duplicate (which would win at boot) goes', {}, 'net.ipv4.ip_forward = 1\n-net.ipv4.ip_forward = 0\n', 'net.ipv4.ip_forward = 1\n'],
    ['appended after other keys', {}, 'vm.swappiness = 10', 'vm.swappiness = 10\nnet.ipv4.ip_forward = 1\n'],
    ['blanks inside a value do not count', { name: 'net.ipv4.ip_local_port_range', value: '32768   60999' }, 'net.ipv4.ip_local_port_range = 32768\t60999\n', 'same'],
    ['absent removes the line', { state: 'absent' }, 'vm.swappiness = 10\nnet.ipv4.ip_forward = 1\n', 'vm.swappiness = 10\n'],
    ['absent leaving only blanks removes the file', { state: 'absent' }, 'net.ipv4.ip_forward = 1\n\n', null],
    ['absent and no line: unchanged', { state: 'absent' }, '# net.ipv4.ip_forward = 1\n', 'same'],
  ];
  it.each(rows)('%s', (_what, o, text, want) => {
    const out = editConf(text, params(o));
    if (want === 'same') expect(out).toBe(text);
    else expect(out).toBe(want);
  });
});

describe('sysctl: (params, state) → plan', () => {
  const rows: Array<[string, Record<string, unknown>, SysctlState, { changed: boolean; summary: string | RegExp; diff?: RegExp; undo?: SysctlUndo | null; action?: string }]> = [
    [
      'a new file and the live value',
      {},
      st('0'),
      {
        changed: true,
        summary: `set net.ipv4.ip_forward = 1 (create ${DEFAULT}; live: 0 → 1)`,
        diff: /\+net\.ipv4\.ip_forward = 1/,
        undo: { name: 'net.ipv4.ip_forward', file: { kind: 'absent', path: DEFAULT, created: [] }, live: '0' },
        action: 'change',
      },
    ],
    [
      'only the live value',
      {},
      st('0', file('net.ipv4.ip_forward = 1\n')),
      { changed: true, summary: `set net.ipv4.ip_forward = 1 (${DEFAULT} as wanted; live: 0 → 1)`, undo: { name: 'net.ipv4.ip_forward', file: null, live: '0' } },
    ],
    [
      'only the file; the live value is right already',
      {},
      st('1', file('net.ipv4.ip_forward = 0\n')),
      {
        changed: true,
        summary: `set net.ipv4.ip_forward = 1 (update ${DEFAULT}; live: 1)`,
        diff: /-net\.ipv4\.ip_forward = 0\n\+net\.ipv4\.ip_forward = 1/,
        // The backup path is checked below (it holds a hash of the step's name).
        undo: { name: 'net.ipv4.ip_forward', file: { kind: 'file', path: DEFAULT }, live: null },
      },
    ],
    ['both as wanted', {}, st('1', file('net.ipv4.ip_forward = 1\n')), { changed: false, summary: `net.ipv4.ip_forward = 1 in ${DEFAULT}; live: 1`, undo: null }],
    [
      'apply_live: false leaves the kernel alone and says so',
      { apply_live: false },
      st('0'),
      {
        changed: true,
        summary: `set net.ipv4.ip_forward = 1 (create ${DEFAULT}; live: 0, not set now (apply_live: false; the file applies at boot))`,
        undo: { name: 'net.ipv4.ip_forward', file: { kind: 'absent', path: DEFAULT, created: [] }, live: null },
        action: 'create',
      },
    ],
    ['apply_live: false, file as wanted: unchanged whatever the kernel holds', { apply_live: false }, st('0', file('net.ipv4.ip_forward = 1\n')), { changed: false, summary: /live: 0, not set now/ }],
    [
      'absent removes the file it leaves empty, and says the live value stays',
      { state: 'absent' },
      st('1', file('net.ipv4.ip_forward = 1\n')),
      {
        changed: true,
        summary: `remove net.ipv4.ip_forward (and the file, left empty: ${DEFAULT}); the live value 1 is left as it is (until a reboot or another setting)`,
        diff: /-net\.ipv4\.ip_forward = 1/,
        action: 'remove',
      },
    ],
    ['absent and not set', { state: 'absent' }, st('1'), { changed: false, summary: /^net\.ipv4\.ip_forward is not set in .*; the live value 1 is left as it is/, undo: null }],
    [
      'a multi-number value with tabs from the kernel',
      { name: 'net.ipv4.ip_local_port_range', value: '1024 65000' },
      st('32768\t60999'),
      { changed: true, summary: /live: "32768 60999" → "1024 65000"\)$/ },
    ],
  ];
  it.each(rows)('%s', (_what, o, s, want) => {
    const plan = planSysctl(params(o), s, env);
    expect(plan.changed).toBe(want.changed);
    if (typeof want.summary === 'string') expect(plan.summary).toBe(want.summary);
    else expect(plan.summary).toMatch(want.summary);
    if (want.diff) expect(plan.diff).toMatch(want.diff);
    else if (!want.changed) expect(plan.diff).toBeUndefined();
    if (want.undo !== undefined && want.undo?.file?.kind !== 'file') expect(plan.undo).toEqual(want.undo);
    if (want.undo?.file?.kind === 'file') {
      expect(plan.undo?.live).toBeNull();
      expect(plan.undo?.file).toMatchObject({ kind: 'file', path: DEFAULT, mode: 0o644 });
      expect((plan.undo!.file as { backup?: string }).backup).toMatch(new RegExp(`^/var/lib/hostsmith/backups/R1/Forward-[0-9a-f]{8}${DEFAULT.replace(/\./g, '\\.')}$`));
    }
    if (want.action) expect(plan.action).toBe(want.action);
  });

  it('a drop-in that is a link or a folder is refused', () => {
    expect(() => planSysctl(params(), st('0', { kind: 'link', target: '/etc/shadow', missing: [] }), env)).toThrow(/symbolic link to \/etc\/shadow/);
    expect(() => planSysctl(params(), st('0', { kind: 'directory', mode: 0o755, owner: 'root', group: 'root', missing: [] }), env)).toThrow(/is a directory/);
  });
});

describe('sysctl: reading the host', () => {
  const fileAnswer = Buffer.from(['absent', '', '', '', '0', ''].map((f) => `${f}\0`).join(''));
  it('a key that exists gives its live value and the file', () => {
    const s = parseSysctlCheck(Buffer.concat([Buffer.from('live\u00000\u0000'), fileAnswer]), params());
    expect(s).toEqual({ live: '0', file: { kind: 'absent', missing: [] } });
  });
  it.each([
    ['missing', /no kernel parameter net\.ipv4\.ip_forward on this host \(\/proc\/sys\/net\/ipv4\/ip_forward does not exist\)/],
    ['notakey', /is a group of kernel parameters/],
    ['unreadable', /cannot be read/],
  ])('%s: a clear step error for state: present', (how, why) => {
    const raw = Buffer.concat([Buffer.from(`${how}\0\0`), fileAnswer]);
    expect(() => parseSysctlCheck(raw, params())).toThrow(StepError);
    expect(() => parseSysctlCheck(raw, params())).toThrow(why);
    // Removing the line of a key the kernel no longer has is fine.
    expect(parseSysctlCheck(raw, params({ state: 'absent' })).live).toBeNull();
  });
  it('reads the /proc/sys path of the name and the drop-in in one script', () => {
    const s = checkScript(params());
    expect(s).toContain('k=/proc/sys/net/ipv4/ip_forward');
    expect(s).toContain(`p=${DEFAULT}`);
  });
});

/** A host that answers the live write and its read-back as told, recording every exec. */
function liveCtx(readBack: string, code = 0) {
  const cmds: string[] = [];
  const ctx = {
    host: 'h',
    runId: 'R1',
    step: 'Forward',
    backupDir: env.backupDir,
    exec: async (cmd: string) => {
      cmds.push(cmd);
      const stderr = code ? 'sh: 1: cannot create /proc/sys/net/ipv4/ip_forward: Read-only file system\nhostsmith-failed: live 2\n' : '';
      return { code: code ? 1 : 0, stdout: code ? '' : readBack, stderr, stdoutRaw: Buffer.from(code ? '' : readBack) };
    },
  } as unknown as StepContext;
  return { ctx, cmds };
}

describe('sysctl: the live part of apply and rollback (the sandbox hosts cannot write /proc/sys)', () => {
  const p = params();
  const s = st('0', file('net.ipv4.ip_forward = 1\n'));
  const plan = planSysctl(p, s, env);

  it('writes the value to /proc/sys, held to the value the plan saw, and reads it back', async () => {
    const { ctx, cmds } = liveCtx('1');
    const r = await sysctlStep.apply(ctx, p, plan, s);
    expect(r.state).toMatchObject({ live: '1' });
    expect(cmds).toHaveLength(1);
    // The guard hashes what the read prints now against the value planned from ("0").
    expect(cmds[0]).toMatch(/printf %s "\$\(cat -- \/proc\/sys\/net\/ipv4\/ip_forward\)"/);
    expect(cmds[0]).toContain("printf '%s\\n' 1 > /proc/sys/net/ipv4/ip_forward");
  });

  it('a value the kernel changes on the way in is an error (a rerun would never settle)', async () => {
    const { ctx } = liveCtx('0');
    await expect(sysctlStep.apply(ctx, p, plan, s)).rejects.toThrow(/the kernel took net\.ipv4\.ip_forward = 1 but now reports "0"/);
  });

  it('a refused write fails the step with what the host said', async () => {
    const { ctx } = liveCtx('', 1);
    await expect(sysctlStep.apply(ctx, p, plan, s)).rejects.toThrow(/setting net\.ipv4\.ip_forward to 1 in the running kernel failed.*Read-only file system/s);
  });

  it('a refused write after the file was written puts the file back (a half-done step undoes itself)', async () => {
    const both = planSysctl(p, st('0'), env);
    const cmds: string[] = [];
    const ctx = {
      ...liveCtx('').ctx,
      exec: async (cmd: string) => {
        cmds.push(cmd);
        if (cmd.includes('> /proc/sys/')) return { code: 1, stdout: '', stderr: 'hostsmith-failed: live 2\n', stdoutRaw: Buffer.alloc(0) };
        return { code: 0, stdout: '', stderr: '', stdoutRaw: Buffer.alloc(0) };
      },
    } as unknown as StepContext;
    await expect(sysctlStep.apply(ctx, p, both, st('0'))).rejects.toThrow(/running kernel failed/);
    expect(cmds).toHaveLength(3);
    expect(cmds[0]).toContain('hs_write');
    expect(cmds[2]).toMatch(/rm -f -- 99-hostsmith-net\.ipv4\.ip_forward\.conf/);
  });

  it('rollback and the watchdog script write the old value back, then restore the file', async () => {
    const undo = planSysctl(p, st('0'), env).undo!;
    const { ctx, cmds } = liveCtx('');
    await sysctlStep.rollback(ctx, p, undo);
    expect(cmds[0]).toBe("printf '%s\\n' 0 > /proc/sys/net/ipv4/ip_forward");
    expect(cmds[1]).toContain('rm -f -- 99-hostsmith-net.ipv4.ip_forward.conf');
    const script = sysctlStep.hostRollback!(p, undo, { host: 'h', runId: 'R1', step: 'Forward', backupDir: env.backupDir, init: 'sysvinit' });
    expect(script.indexOf('> /proc/sys/net/ipv4/ip_forward')).toBeLessThan(script.indexOf('rm -f --'));
  });
});

describe('sysctl: undo data', () => {
  const p = params();
  const undo = planSysctl(p, st('0'), env).undo!;
  it('says what rollback does', () => {
    expect(sysctlStep.undoSummary!(undo as never)).toBe(`set net.ipv4.ip_forward back to "0" in the running kernel; remove ${DEFAULT}`);
  });
  it.each([
    [{ ...undo, name: 'kernel.hostname' }, /for kernel parameter "kernel\.hostname"/],
    [{ ...undo, file: { kind: 'absent', path: '/etc/shadow', created: [] } }, /is for "\/etc\/shadow"/],
    [{ ...undo, live: '0\nrm -rf /' }, /not one line/],
  ])('refuses undo data that is not its own: %j', (u, why) => {
    expect(sysctlStep.undoMismatch!(p, u as never)).toMatch(why);
  });
  it('takes its own', () => expect(sysctlStep.undoMismatch!(p, undo as never)).toBeUndefined());
});
