import { describe, expect, it } from 'vitest';
import { checkScript, parseCheck, planService, serviceSchema, serviceStep, type ServiceState } from '../../src/steps/service/service.js';

const params = (o: Record<string, unknown>) => serviceSchema.parse({ name: 'cron', ...o });
const sysv = (running: boolean, enabled: 'enabled' | 'disabled' | 'none' = 'enabled'): ServiceState => ({ init: 'sysvinit', exists: true, running, enabled });
const sd = (running: boolean, enabled: string): ServiceState => ({ init: 'systemd', exists: true, running, enabled });

describe('service schema', () => {
  it('needs state or enabled, and a plain service name', () => {
    expect(serviceSchema.safeParse({ name: 'cron' }).error?.issues[0]).toMatchObject({ path: ['state'], message: expect.stringMatching(/give state and\/or enabled/) });
    expect(serviceSchema.safeParse({ name: 'cron; reboot', state: 'started' }).error?.issues[0]).toMatchObject({ path: ['name'], message: expect.stringMatching(/not a valid service name/) });
    expect(serviceSchema.safeParse({ name: '../x', state: 'started' }).success).toBe(false);
    expect(serviceSchema.safeParse({ name: 'cron', state: 'running' }).error?.issues[0]?.path).toEqual(['state']);
    expect(serviceSchema.safeParse({ name: 'getty@tty1.service', enabled: true }).success).toBe(true);
  });
});

describe('planService: (params, state) → plan', () => {
  const cases: Array<[string, Record<string, unknown>, ServiceState, { changed: boolean; summary: string; undo: unknown }]> = [
    ['starts a stopped service', { state: 'started' }, sysv(false), { changed: true, summary: 'start cron', undo: { name: 'cron', init: 'sysvinit', running: false } }],
    ['leaves a running one alone', { state: 'started' }, sysv(true), { changed: false, summary: 'cron is running', undo: null }],
    ['stops a running service', { state: 'stopped' }, sysv(true), { changed: true, summary: 'stop cron', undo: { name: 'cron', init: 'sysvinit', running: true } }],
    ['leaves a stopped one alone', { state: 'stopped' }, sysv(false), { changed: false, summary: 'cron is stopped', undo: null }],
    ['always restarts; undo keeps it running', { state: 'restarted' }, sysv(true), { changed: true, summary: 'restart cron', undo: { name: 'cron', init: 'sysvinit', running: true } }],
    [
      'restart of a stopped service starts it; undo stops it',
      { state: 'restarted' },
      sysv(false),
      { changed: true, summary: 'start cron (restart: it was stopped)', undo: { name: 'cron', init: 'sysvinit', running: false } },
    ],
    ['always reloads', { state: 'reloaded' }, sysv(true), { changed: true, summary: 'reload cron', undo: { name: 'cron', init: 'sysvinit', running: true } }],
    [
      'reload of a stopped service starts it',
      { state: 'reloaded' },
      sysv(false),
      { changed: true, summary: 'start cron (reload: it was stopped)', undo: { name: 'cron', init: 'sysvinit', running: false } },
    ],
    ['disables at boot', { enabled: false }, sysv(true), { changed: true, summary: 'disable cron at boot (enabled → disabled)', undo: { name: 'cron', init: 'sysvinit', enabled: 'enabled' } }],
    [
      'enables a service with no rc links',
      { enabled: true },
      sysv(false, 'none'),
      { changed: true, summary: 'enable cron at boot (none → enabled)', undo: { name: 'cron', init: 'sysvinit', enabled: 'none' } },
    ],
    ['no links counts as disabled', { enabled: false }, sysv(false, 'none'), { changed: false, summary: 'cron is stopped and disabled', undo: null }],
    [
      'both at once; undo records both',
      { state: 'started', enabled: true },
      sysv(false, 'disabled'),
      { changed: true, summary: 'start cron; enable cron at boot (disabled → enabled)', undo: { name: 'cron', init: 'sysvinit', running: false, enabled: 'disabled' } },
    ],
    [
      'only the part that changes goes into undo',
      { state: 'started', enabled: true },
      sysv(false, 'enabled'),
      { changed: true, summary: 'start cron', undo: { name: 'cron', init: 'sysvinit', running: false } },
    ],
    ['systemd: static counts as enabled', { enabled: true }, sd(true, 'static'), { changed: false, summary: 'cron is running and enabled', undo: null }],
    [
      'systemd: disables an enabled unit',
      { state: 'stopped', enabled: false },
      sd(true, 'enabled'),
      { changed: true, summary: 'stop cron; disable cron at boot (enabled → disabled)', undo: { name: 'cron', init: 'systemd', running: true, enabled: 'enabled' } },
    ],
    [
      'a service not installed yet: planned, apply will fail unless an earlier step installs it',
      { state: 'started', enabled: true },
      { init: 'sysvinit', exists: false, running: false, enabled: 'none' },
      {
        changed: true,
        summary: 'start cron, enable cron — cron is not installed yet: apply fails unless an earlier step installs it',
        undo: { name: 'cron', init: 'sysvinit', running: false, enabled: 'none' },
      },
    ],
  ];
  it.each(cases)('%s', (_n, p, s, expected) => {
    expect(planService(params(p), s)).toEqual(expected);
  });

  it('refuses what systemd cannot do', () => {
    expect(() => planService(params({ enabled: true }), sd(false, 'masked'))).toThrow(/cron is masked: unmask it first/);
    expect(() => planService(params({ enabled: false }), sd(false, 'static'))).toThrow(/static unit: it cannot be disabled/);
  });
});

describe('service check output', () => {
  it('sysvinit: status exit code and rc links', () => {
    expect(parseCheck('exists=1\nstatus=0\nlink=/etc/rc2.d/S01cron\nlink=/etc/rc3.d/S01cron\n', 'sysvinit')).toEqual(sysv(true, 'enabled'));
    expect(parseCheck('exists=1\nstatus=3\nlink=/etc/rc2.d/K01cron\nlink=/etc/rc0.d/K01cron\n', 'sysvinit')).toEqual(sysv(false, 'disabled'));
    expect(parseCheck('exists=1\nstatus=3\n', 'sysvinit')).toEqual(sysv(false, 'none'));
    // An S link outside runlevels 2–5 does not make it start at boot in multi-user mode.
    expect(parseCheck('exists=1\nstatus=3\nlink=/etc/rcS.d/S01cron\n', 'sysvinit').enabled).toBe('disabled');
    expect(parseCheck('exists=0\n', 'sysvinit')).toEqual({ init: 'sysvinit', exists: false, running: false, enabled: 'none' });
  });
  it('systemd: is-active and is-enabled', () => {
    expect(parseCheck('exists=1\nactive=active\nenabled=enabled\n', 'systemd')).toEqual(sd(true, 'enabled'));
    expect(parseCheck('exists=1\nactive=failed\nenabled=disabled\n', 'systemd')).toEqual(sd(false, 'disabled'));
    expect(parseCheck('exists=0\n', 'systemd')).toMatchObject({ exists: false, enabled: 'not-found' });
  });
  it('puts the name into the scripts', () => {
    expect(checkScript('cron', 'sysvinit')).toContain('[SK][0-9][0-9]cron;');
    expect(checkScript('getty@tty1', 'systemd')).toContain('systemctl is-active -- getty@tty1 ');
  });
});

describe('service apply: the control command and the read back in one exec', () => {
  /** A host that answers each exec with the control command's output, then the state after a start. */
  function fakeCtx(o: { code?: number; said?: string; runningAfter?: boolean } = {}) {
    const execs: string[] = [];
    const ctx = {
      host: 'h1',
      facts: { init: 'sysvinit' },
      exec: async (cmd: string) => {
        execs.push(cmd);
        const mark = /printf '\\n%s\\n' (hostsmith-after-[0-9a-f]+)/.exec(cmd)?.[1];
        if (o.code) return { code: o.code, stdout: o.said ?? '', stderr: '' };
        return { code: 0, stdout: `Starting cron.\n\n${mark}\nexists=1\nstatus=${o.runningAfter === false ? 3 : 0}\nlink=/etc/rc2.d/S01cron\n`, stderr: '' };
      },
    } as unknown as import('../../src/steps/step.js').StepContext;
    return { ctx, execs };
  }
  const p = params({ state: 'started' });
  const plan = planService(p, sysv(false));

  it('one exec starts the service and gives the state it left, for the journal', async () => {
    const { serviceStep } = await import('../../src/steps/service/service.js');
    const { ctx, execs } = fakeCtx();
    const r = await serviceStep.apply(ctx, p, plan, sysv(false));
    expect(execs).toHaveLength(1);
    expect(execs[0]).toContain('service cron start');
    expect(execs[0]).toContain(checkScript('cron', 'sysvinit'));
    expect(r).toEqual({ state: sysv(true) });
  });

  it('a failed start says what the init script said; a start that did not take says so', async () => {
    const { serviceStep } = await import('../../src/steps/service/service.js');
    await expect(serviceStep.apply(fakeCtx({ code: 1, said: 'cron: no such daemon\n' }).ctx, p, plan, sysv(false))).rejects.toThrow('start cron on h1 failed (exit 1): cron: no such daemon');
    await expect(serviceStep.apply(fakeCtx({ runningAfter: false }).ctx, p, plan, sysv(false))).rejects.toThrow('start cron on h1 reported success, but the service is not running');
  });
});

describe('service on systemd: (params, what systemctl says) → plan, and the scripts', () => {
  const cases: Array<[string, Record<string, unknown>, ServiceState, { changed: boolean; summary: string; undo: unknown }]> = [
    ['starts an inactive unit', { state: 'started' }, sd(false, 'enabled'), { changed: true, summary: 'start cron', undo: { name: 'cron', init: 'systemd', running: false } }],
    ['leaves an active unit alone', { state: 'started', enabled: true }, sd(true, 'enabled'), { changed: false, summary: 'cron is running and enabled', undo: null }],
    [
      'enables a disabled unit; undo keeps "disabled"',
      { enabled: true },
      sd(false, 'disabled'),
      { changed: true, summary: 'enable cron at boot (disabled → enabled)', undo: { name: 'cron', init: 'systemd', enabled: 'disabled' } },
    ],
    ['an alias counts as enabled', { enabled: true }, sd(true, 'alias'), { changed: false, summary: 'cron is running and enabled', undo: null }],
    [
      'a unit an earlier step installs: planned, its boot state kept as not-found',
      { state: 'started', enabled: true },
      { init: 'systemd', exists: false, running: false, enabled: 'not-found' },
      {
        changed: true,
        summary: 'start cron, enable cron — cron is not installed yet: apply fails unless an earlier step installs it',
        undo: { name: 'cron', init: 'systemd', running: false, enabled: 'not-found' },
      },
    ],
  ];
  it.each(cases)('%s', (_n, p, s, expected) => {
    expect(planService(params(p), s)).toEqual(expected);
  });

  it('activating and reloading count as running; failed does not', () => {
    expect(parseCheck('exists=1\nactive=activating\nenabled=enabled\n', 'systemd').running).toBe(true);
    expect(parseCheck('exists=1\nactive=reloading\nenabled=enabled\n', 'systemd').running).toBe(true);
    expect(parseCheck('exists=1\nactive=failed\nenabled=enabled\n', 'systemd').running).toBe(false);
    expect(parseCheck('exists=1\nactive=active\nenabled=\n', 'systemd').enabled).toBe('disabled');
  });

  const env = { host: 'h1', runId: 'R1', step: 'S', backupDir: '/var/lib/hostsmith/backups/R1', init: 'systemd' as const };

  it('rollback: boot state with systemctl enable/disable, then start or stop; nothing of update-rc.d or service', () => {
    const back = serviceStep.hostRollback!(params({ state: 'started', enabled: true }), { name: 'cron', init: 'systemd', running: false, enabled: 'disabled' }, env);
    expect(back).toContain('systemctl disable -- cron');
    expect(back).toContain('systemctl stop -- cron');
    expect(back.indexOf('systemctl disable')).toBeLessThan(back.indexOf('systemctl stop'));
    expect(back).not.toMatch(/update-rc\.d|service cron/);
    const on = serviceStep.hostRollback!(params({ state: 'stopped', enabled: false }), { name: 'cron', init: 'systemd', running: true, enabled: 'enabled' }, env);
    expect(on).toContain('systemctl enable -- cron');
    expect(on).toContain('systemctl start -- cron');
    // A unit that is gone: fine when it had to be stopped, an error when it had to run.
    expect(serviceStep.hostRollback!(params({ state: 'started' }), { name: 'cron', init: 'systemd', running: false }, env)).toContain('exit 0');
    expect(on).toContain('no systemd unit of that name');
  });

  it('an init script run through systemd’s sysv generator: no rc links is "none", and rollback puts back none', () => {
    expect(parseCheck('exists=1\nactive=inactive\nenabled=disabled\nsysv=1\n', 'systemd').enabled).toBe('none');
    expect(parseCheck('exists=1\nactive=inactive\nenabled=disabled\nsysv=1\nlink=/etc/rc2.d/K01x\n', 'systemd').enabled).toBe('disabled');
    expect(parseCheck('exists=1\nactive=inactive\nenabled=disabled\n', 'systemd').enabled).toBe('disabled');
    expect(planService(params({ enabled: true }), sd(false, 'none'))).toMatchObject({ summary: 'enable cron at boot (none → enabled)', undo: { enabled: 'none' } });
    const back = serviceStep.hostRollback!(params({ enabled: true }), { name: 'cron', init: 'systemd', enabled: 'none' }, env);
    expect(back).toContain('s=$(systemctl show -p SourcePath --value -- cron) && update-rc.d -f "${s##*/}" remove');
    expect(back).not.toContain('systemctl disable');
  });

  it('a start reads the unit file again first when systemd says it changed on disk', () => {
    const run = serviceStep.hostRun!(params({ state: 'reloaded' }), env);
    expect(run).toContain('systemctl show -p NeedDaemonReload --value -- cron');
    expect(run).toContain('systemctl daemon-reload; } && systemctl reload -- cron');
    expect(run).toContain('systemctl is-active --quiet -- cron');
  });

  it('apply: systemctl and the read back in one exec', async () => {
    const execs: string[] = [];
    const ctx = {
      host: 'h1',
      facts: { init: 'systemd' },
      exec: async (cmd: string) => {
        execs.push(cmd);
        const mark = /printf '\\n%s\\n' (hostsmith-after-[0-9a-f]+)/.exec(cmd)?.[1];
        return { code: 0, stdout: `\n${mark}\nexists=1\nactive=active\nenabled=enabled\n`, stderr: '' };
      },
    } as unknown as import('../../src/steps/step.js').StepContext;
    const p = params({ state: 'started', enabled: true });
    const r = await serviceStep.apply(ctx, p, planService(p, sd(false, 'disabled')), sd(false, 'disabled'));
    expect(execs).toHaveLength(2);
    expect(execs[0]).toContain('systemctl enable -- cron');
    expect(execs[1]).toContain('systemctl start -- cron');
    expect(execs[1]).toContain(checkScript('cron', 'systemd'));
    expect(r).toEqual({ state: sd(true, 'enabled') });
  });

  it('every script is valid sh', async () => {
    const { execFileSync } = await import('node:child_process');
    const scripts = [
      checkScript('cron', 'systemd'),
      serviceStep.hostRollback!(params({ state: 'started', enabled: true }), { name: 'cron', init: 'systemd', running: false, enabled: 'disabled' }, env),
      serviceStep.hostRun!(params({ state: 'restarted', enabled: true }), env),
    ];
    for (const s of scripts) expect(() => execFileSync('sh', ['-n', '-c', s])).not.toThrow();
  });
});
