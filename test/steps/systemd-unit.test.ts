/**
 * `systemd_unit`: the name and fields at load, params → footprint, and params + what the host
 * shows (the unit file, LoadState, is-active, is-enabled) → plan; the rollback script's order, and
 * journaled undo data that is not the step's own.
 */
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { StepError } from '../../src/errors.js';
import type { PathState } from '../../src/steps/file-state.js';
import {
  checkScript,
  contentProblem,
  installOf,
  linkDirs,
  parseUnitCheck,
  planUnit,
  rollbackScript,
  runScript,
  systemdUnitSchema,
  systemdUnitStep,
  type SystemdUnitState,
} from '../../src/steps/systemd_unit/systemd_unit.js';

const env = { runId: 'R1', step: 'App', backupDir: '/var/lib/hostsmith/backups/R1' };
const UNIT = '[Unit]\nDescription=App\n\n[Service]\nExecStart=/usr/bin/sleep infinity\n\n[Install]\nWantedBy=multi-user.target\n';
const params = (o: Record<string, unknown> = {}) => systemdUnitSchema.parse({ name: 'app.service', content: UNIT, ...o });
const file = (content: string, mode = 0o644): PathState => ({ kind: 'file', content: Buffer.from(content), mode, owner: 'root', group: 'root', missing: [] });
const absent: PathState = { kind: 'absent', missing: [] };
const state = (o: Partial<SystemdUnitState> = {}): SystemdUnitState => ({
  systemd: true,
  load: 'loaded',
  active: 'inactive',
  enabled: 'disabled',
  stale: false,
  missingDirs: [],
  file: file(UNIT),
  ...o,
});
const fresh = (o: Partial<SystemdUnitState> = {}) => state({ load: 'not-found', enabled: 'not-found', file: absent, ...o });

describe('systemd_unit: params, checked at load', () => {
  it.each(['app.service', 'backup.timer', 'getty@tty1.service', 'worker@.service', 'web.socket', 'srv-data.mount', 'a_b:c.path', 'app.target', 'system-app.slice'])('%s is a unit name', (name) => {
    expect(systemdUnitSchema.safeParse({ name, content: '' }).success).toBe(true);
  });
  it.each([
    ['app', /ending in \.service/],
    ['../../etc/passwd.service', /unit file name/],
    ['sub/app.service', /unit file name/],
    ['-app.service', /unit file name/],
    ['.app.service', /unit file name/],
    ['app service.service', /unit file name/],
    ['app.device', /unit file name/],
    ['app.scope', /unit file name/],
    ['a@b@c.service', /unit file name/],
    [`${'a'.repeat(250)}.service`, /at most 255/],
  ])('%j is refused', (name, why) => {
    const r = systemdUnitSchema.safeParse({ name, content: '' });
    expect(r.success).toBe(false);
    expect(JSON.stringify(r.error?.issues)).toMatch(why);
  });
  it('content or a template in src, one of them; vars only with a template', () => {
    expect(systemdUnitSchema.safeParse({ name: 'a.service' }).error?.issues[0]).toMatchObject({ path: ['content'], message: expect.stringMatching(/content or as a template in src/) });
    expect(systemdUnitSchema.safeParse({ name: 'a.service', content: UNIT, src: 'a.hbs' }).success).toBe(false);
    expect(systemdUnitSchema.safeParse({ name: 'a.service', content: UNIT, vars: { x: 1 } }).error?.issues[0]?.path).toEqual(['vars']);
    expect(systemdUnitSchema.safeParse({ name: 'a.service', src: 'a.service.hbs', vars: { x: 1 } }).success).toBe(true);
  });
  it('states as the service step spells them; enabled a boolean', () => {
    expect(systemdUnitSchema.safeParse({ name: 'a.service', content: UNIT, state: 'running' }).error?.issues[0]?.path).toEqual(['state']);
    expect(systemdUnitSchema.parse({ name: 'a.service', content: UNIT, enabled: 'true' }).enabled).toBe(true);
    for (const s of ['started', 'stopped', 'restarted', 'reloaded']) expect(systemdUnitSchema.safeParse({ name: 'a.service', content: UNIT, state: s }).success).toBe(true);
  });
  it('a template unit (foo@.service) can be written but not started or enabled', () => {
    const r = systemdUnitSchema.safeParse({ name: 'worker@.service', content: UNIT, state: 'started', enabled: true });
    expect(r.error?.issues.map((i) => [i.path[0], i.message])).toEqual([
      ['state', expect.stringContaining('template unit: start an instance of it (a service step with name: worker@NAME.service)')],
      ['enabled', expect.stringContaining('template unit: enable an instance')],
    ]);
  });
  it('nothing else', () => {
    expect(systemdUnitSchema.safeParse({ name: 'a.service', content: UNIT, mode: '0600' }).success).toBe(false);
  });
});

describe('systemd_unit: footprint', () => {
  it('the file and the service; links and what a start writes only when asked for', () => {
    expect(systemdUnitStep.footprint(params())).toEqual({
      reads: ['path:/etc/systemd/system/app.service', 'service:app.service', 'service:app'],
      writes: ['path:/etc/systemd/system/app.service', 'service:app.service', 'service:app'],
    });
    const fp = systemdUnitStep.footprint(systemdUnitSchema.parse({ name: 'nightly.timer', content: '[Timer]\nOnCalendar=daily\n', enabled: true, state: 'started' }));
    expect(fp.reads).toEqual(['path:/etc/systemd/system/nightly.timer', 'service:nightly.timer']);
    expect(fp.writes).toEqual(expect.arrayContaining(['path:/etc/systemd/system', 'path:/run', 'path:/var/lib', 'service:nightly.timer']));
  });
});

describe('systemd_unit: the unit text', () => {
  it('sections and keys; a line that is neither, or a missing own section, is named', () => {
    expect(contentProblem('app.service', UNIT)).toBeUndefined();
    expect(contentProblem('app.service', '[Unit]\nDescription=x\nExecStart /bin/true\n')).toMatch(/line 3 is neither a \[Section\] header nor Key=value: "ExecStart \/bin\/true"/);
    expect(contentProblem('app.service', 'ExecStart=/bin/true\n')).toMatch(/line 1 comes before any \[Section\] header/);
    expect(contentProblem('app.timer', '[Unit]\nDescription=x\n')).toBe('app.timer has no [Timer] section (a .timer unit needs one)');
    expect(contentProblem('app.target', '[Unit]\nDescription=x\n')).toBeUndefined();
    // Comments, blanks, continuation lines, CRLF.
    expect(contentProblem('app.service', '# c\n; c\n[Service]\r\nExecStart=/bin/sh -c \\\n  "true"\n')).toBeUndefined();
  });
  it('the [Install] section as enable reads it, and the folders its links go into', () => {
    expect(installOf(UNIT)).toBe('WantedBy=multi-user.target');
    expect(installOf('[Service]\nExecStart=/bin/true\n')).toBeNull();
    expect(installOf('[Install]\nWantedBy=a.target   b.target\n')).toBe(installOf('[Install]\nWantedBy=a.target b.target\n'));
    expect(linkDirs('[Install]\nWantedBy=timers.target multi-user.target\nRequiredBy=x.service\nAlias=y.service\n')).toEqual([
      '/etc/systemd/system/timers.target.wants',
      '/etc/systemd/system/multi-user.target.wants',
      '/etc/systemd/system/x.service.requires',
    ]);
    expect(linkDirs('[Install]\nWantedBy=../../etc\n')).toEqual([]);
  });
});

describe('systemd_unit: what the host says → state', () => {
  const answer = (fields: string[], fileAnswer: string) => Buffer.concat([Buffer.from(fields.map((f) => `${f}\0`).join('')), Buffer.from(fileAnswer)]);
  const fileAbsent = 'absent\0\0\0\0' + '0\0\0';
  it('a unit that is not there yet', () => {
    const s = parseUnitCheck(answer(['systemd', 'not-found', 'inactive', '', 'no', '0'], fileAbsent), params({ enabled: true }), ['/etc/systemd/system/multi-user.target.wants']);
    expect(s).toMatchObject({
      systemd: true,
      load: 'not-found',
      active: 'inactive',
      enabled: 'not-found',
      stale: false,
      missingDirs: ['/etc/systemd/system/multi-user.target.wants'],
      file: { kind: 'absent' },
    });
  });
  it('a running, enabled unit whose file systemd has not reloaded', () => {
    const s = parseUnitCheck(answer(['systemd', 'loaded', 'active', 'enabled', 'yes'], `file\0${'644'}\0root\0root\0${'0'}\0\0${UNIT}`), params(), []);
    expect(s).toMatchObject({ load: 'loaded', active: 'active', enabled: 'enabled', stale: true, file: { kind: 'file', mode: 0o644 } });
    expect(s.file.content?.toString()).toBe(UNIT);
  });
  it('no systemd: the step says so when it reads the host', async () => {
    const ctx = {
      host: 'h1',
      exec: async () => ({ code: 0, stdout: '', stderr: '', stdoutRaw: answer(['other', '', '', '', ''], fileAbsent) }),
    } as unknown as import('../../src/steps/step.js').StepContext;
    await expect(systemdUnitStep.check(ctx, params())).rejects.toThrow('systemd does not run on h1 (no /run/systemd/system)');
  });
  it('the check reads each link folder the content enables into', () => {
    const s = checkScript('app.service', ['/etc/systemd/system/multi-user.target.wants']);
    expect(s).toContain('systemctl is-enabled -- app.service');
    expect(s).toContain('if [ -d /etc/systemd/system/multi-user.target.wants ]');
  });
});

describe('systemd_unit: plan (params + host state → what changes)', () => {
  it('a new unit, enabled and started: the diff, daemon-reload, enable, start; undo records what it found', () => {
    const plan = planUnit(params({ enabled: true, state: 'started' }), fresh({ missingDirs: ['/etc/systemd/system/multi-user.target.wants'] }), env);
    expect(plan.summary).toBe(
      `create /etc/systemd/system/app.service (${UNIT.length} bytes, 0644 root:root); daemon-reload; enable app.service (not-found → enabled); start app.service (inactive → active)`,
    );
    expect(plan.action).toBe('create');
    expect(plan.diff).toContain('+ExecStart=/usr/bin/sleep infinity');
    expect(plan.undo).toEqual({
      name: 'app.service',
      file: { kind: 'absent', path: '/etc/systemd/system/app.service', created: [] },
      enabled: 'not-found',
      dirs: ['/etc/systemd/system/multi-user.target.wants'],
      active: false,
    });
  });

  it('all as wanted: unchanged, and says so', () => {
    expect(planUnit(params({ enabled: true, state: 'started' }), state({ active: 'active', enabled: 'enabled' }), env)).toEqual({
      changed: false,
      summary: 'app.service: /etc/systemd/system/app.service is up to date, enabled, active',
      undo: null,
    });
    expect(planUnit(params(), state(), env)).toMatchObject({ changed: false, summary: 'app.service: /etc/systemd/system/app.service is up to date' });
  });

  it('only the file changed, nothing else asked: update and daemon-reload, undo holds the backup', () => {
    const plan = planUnit(params(), state({ file: file(UNIT.replace('infinity', '1000')), active: 'active' }), env);
    expect(plan.summary).toBe('update /etc/systemd/system/app.service: content; daemon-reload');
    expect(plan.diff).toContain('-ExecStart=/usr/bin/sleep 1000\n+ExecStart=/usr/bin/sleep infinity');
    expect(plan.undo).toEqual({ name: 'app.service', file: expect.objectContaining({ kind: 'file', backup: expect.stringMatching(/\/etc\/systemd\/system\/app\.service$/) }) });
  });

  it('a wrong mode alone is a change of the file, not of what systemd runs', () => {
    const plan = planUnit(params({ state: 'restarted' }), state({ file: file(UNIT, 0o666), active: 'active' }), env);
    expect(plan.summary).toBe('update /etc/systemd/system/app.service: mode 0666 → 0644; daemon-reload');
    expect(plan.undo).not.toHaveProperty('active');
  });

  it.each([
    ['started, running: nothing', 'started', 'active', false, undefined],
    ['started, stopped: start', 'started', 'inactive', false, 'start app.service (inactive → active)'],
    ['started, failed: start', 'started', 'failed', false, 'start app.service (failed → active)'],
    ['stopped, running: stop', 'stopped', 'active', false, 'stop app.service (active → inactive)'],
    ['restarted, running, same file: nothing (a rerun is a no-op)', 'restarted', 'active', false, undefined],
    ['restarted, stopped: start', 'restarted', 'inactive', false, 'start app.service (restart: it was inactive) (inactive → active)'],
    ['restarted, running, new file: restart', 'restarted', 'active', true, 'restart app.service (its definition changed) (active → active)'],
    ['reloaded, running, new file: reload', 'reloaded', 'active', true, 'reload app.service (its definition changed) (active → active)'],
    ['reloaded, running, same file: nothing', 'reloaded', 'active', false, undefined],
  ])('%s', (_n, st, active, newFile, run) => {
    const s = state({ active, enabled: 'enabled', ...(newFile ? { file: file('[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n') } : {}) });
    const plan = planUnit(params({ state: st }), s, env);
    if (run === undefined) expect(plan.summary).not.toMatch(/start|stop|reload app/);
    else expect(plan.summary).toContain(run);
    expect(plan.changed).toBe(newFile || run !== undefined);
  });

  it('a restart on a new file is done again on the restored one by rollback', () => {
    const plan = planUnit(params({ state: 'restarted' }), state({ active: 'active', file: file('[Service]\nExecStart=/bin/true\n') }), env);
    expect(plan.undo).toMatchObject({ active: true, again: 'restart' });
  });

  it('systemd loaded an older file than the one there: daemon-reload alone', () => {
    const plan = planUnit(params(), state({ stale: true }), env);
    expect(plan).toMatchObject({ changed: true, summary: 'daemon-reload (systemd loaded an older /etc/systemd/system/app.service)', undo: { name: 'app.service', file: null } });
  });

  it.each([
    ['enable a disabled unit', { enabled: true }, state(), 'enable app.service (disabled → enabled)', { enabled: 'disabled' }],
    ['disable an enabled one', { enabled: false }, state({ enabled: 'enabled' }), 'disable app.service (enabled → disabled)', { enabled: 'enabled' }],
    [
      'a new file with a new [Install] section on an enabled unit: reenable',
      { enabled: true },
      state({ enabled: 'enabled', file: file(UNIT.replace('multi-user', 'graphical')) }),
      'reenable app.service (enabled → enabled)',
      { enabled: 'enabled' },
    ],
    ['over a packaged unit (no file of ours yet) that is enabled: reenable on ours', { enabled: true }, state({ enabled: 'enabled', file: absent }), 'reenable app.service', { enabled: 'enabled' }],
    ['a new unit with enabled: false: nothing to disable', { enabled: false }, fresh(), 'create /etc/systemd/system/app.service', {}],
    [
      'a static unit getting an [Install] section: enable',
      { enabled: true },
      state({ enabled: 'static', file: file('[Service]\nExecStart=/bin/true\n') }),
      'enable app.service (static → enabled)',
      { enabled: 'static' },
    ],
  ])('%s', (_n, o, s, summary, undo) => {
    const plan = planUnit(params(o), s, env);
    expect(plan.summary).toContain(summary);
    if (!('enabled' in undo)) expect(plan.undo).not.toHaveProperty('enabled');
    else expect(plan.undo).toMatchObject(undo);
  });

  it('the same [Install] section on an enabled unit: the links stand', () => {
    const plan = planUnit(params({ enabled: true }), state({ enabled: 'enabled', file: file(UNIT.replace('infinity', '5')) }), env);
    expect(plan.summary).toBe('update /etc/systemd/system/app.service: content; daemon-reload');
  });

  it('refuses what would leave the host other than asked', () => {
    const noInstall = systemdUnitSchema.parse({ name: 'app.service', content: '[Service]\nExecStart=/bin/true\n', enabled: true });
    expect(() => planUnit(noInstall, fresh(), env)).toThrow(/has no \[Install\] section .* systemd cannot enable or disable it/);
    expect(() => planUnit(params({ enabled: true }), state({ enabled: 'masked' }), env)).toThrow(/is masked: .*unmask it first \(systemctl unmask app.service\)/);
    expect(() => planUnit(params({ enabled: false }), state({ enabled: 'indirect' }), env)).toThrow(/systemctl is-enabled says app.service is indirect/);
    expect(() => planUnit(systemdUnitSchema.parse({ name: 'app.timer', content: '[Unit]\n' }), fresh(), env)).toThrow('app.timer has no [Timer] section');
  });

  it('a link at the unit path is refused, whoever made it: a mask, or one planted', () => {
    const link = (target: string): PathState => ({ kind: 'link', target, mode: 0o777, owner: 'root', group: 'root', missing: [] });
    expect(() => planUnit(params(), state({ file: link('/dev/null') }), env)).toThrow(
      'app.service is masked (/etc/systemd/system/app.service is a link to /dev/null): unmask it first (systemctl unmask app.service)',
    );
    expect(() => planUnit(params(), state({ file: link('/home/eve/evil.service') }), env)).toThrow(StepError);
    expect(() => planUnit(params(), state({ file: link('/home/eve/evil.service') }), env)).toThrow(
      /is a symbolic link \(to \/home\/eve\/evil.service\), not a unit file; hostsmith does not write a unit through a link/,
    );
    expect(() => planUnit(params(), state({ file: { kind: 'directory', mode: 0o755, owner: 'root', group: 'root', missing: [] } }), env)).toThrow(/is a directory, not a regular file/);
  });
});

describe('systemd_unit: the rollback script', () => {
  const order = (script: string, words: string[]) => words.map((w) => script.indexOf(w));
  it('stop and disable first (on the step’s own file), then the file and daemon-reload, then the link folders', () => {
    const s = rollbackScript({
      name: 'app.service',
      file: { kind: 'absent', path: '/etc/systemd/system/app.service', created: [] },
      enabled: 'not-found',
      active: false,
      dirs: ['/etc/systemd/system/timers.target.wants'],
    });
    const at = order(s, ['systemctl stop -- app.service', 'systemctl disable -- app.service', 'rm -f -- app.service', 'systemctl daemon-reload', 'rmdir -- timers.target.wants']);
    expect(at.every((i) => i >= 0)).toBe(true);
    expect([...at].sort((a, b) => a - b)).toEqual(at);
    expect(s).not.toContain('systemctl start');
    expect(s).not.toContain('enable --');
  });
  it('enable and start come after the restored file: the restart runs the restored definition', () => {
    const s = rollbackScript({
      name: 'app.service',
      file: { kind: 'file', path: '/etc/systemd/system/app.service', backup: '/var/lib/hostsmith/backups/R1/App-1/etc/systemd/system/app.service' },
      enabled: 'enabled',
      active: true,
      again: 'restart',
    });
    const at = order(s, ['systemctl daemon-reload', 'systemctl reenable -- app.service', 'systemctl restart -- app.service']);
    expect(at.every((i) => i >= 0)).toBe(true);
    expect([...at].sort((a, b) => a - b)).toEqual(at);
    expect(s).not.toContain('systemctl disable');
    expect(s).not.toContain('systemctl stop');
  });
  it('without a file change, nothing is reloaded, and a stop is undone by a start', () => {
    const s = rollbackScript({ name: 'app.service', file: null, active: true });
    expect(s).not.toContain('daemon-reload');
    expect(s).toContain('systemctl is-active --quiet -- app.service || systemctl start -- app.service');
  });
  it('a start that ends at once says why', () => {
    expect(runScript('job.service', 'start', true)).toContain('a Type=oneshot service ends when its command does: add RemainAfterExit=yes, or leave out state');
  });
});

describe('systemd_unit: undo data', () => {
  const undo = {
    name: 'app.service',
    file: { kind: 'absent', path: '/etc/systemd/system/app.service', created: [] },
    enabled: 'not-found',
    active: false,
    dirs: ['/etc/systemd/system/timers.target.wants'],
  };
  it('says what rollback puts back', () => {
    expect(systemdUnitStep.undoSummary!(undo)).toBe('stop app.service; disable app.service; remove /etc/systemd/system/app.service; daemon-reload');
    expect(systemdUnitStep.undoSummary!({ name: 'app.service', file: null, enabled: 'enabled', active: true })).toBe('enable app.service again; start app.service again');
  });
  it.each([
    [{ ...undo, name: 'other.service' }, /for unit "other.service"/],
    [{ ...undo, file: { kind: 'absent', path: '/etc/passwd', created: [] } }, /not the step's \/etc\/systemd\/system\/app.service/],
    [{ ...undo, dirs: ['/etc'] }, /would remove "\/etc", which is not a link folder/],
    [{ ...undo, dirs: ['/etc/systemd/system/../../x.wants'] }, /not a link folder/],
    [{ ...undo, enabled: 'x; reboot' }, /not a word/],
    [{ ...undo, active: 'yes' }, /not true or false/],
    [{ ...undo, again: 'kill' }, /not a restart or reload/],
  ])('refuses journaled data that is not its own: %j', (u, why) => {
    expect(systemdUnitStep.undoMismatch!(params(), u)).toMatch(why);
  });
  it('accepts its own', () => {
    expect(systemdUnitStep.undoMismatch!(params(), undo)).toBeUndefined();
  });
});

describe('systemd_unit: every script is valid sh', () => {
  const file = { kind: 'file' as const, path: '/etc/systemd/system/app.service', backup: '/var/lib/hostsmith/backups/R1/App-1/etc/systemd/system/app.service' };
  it.each([
    ['check', checkScript('app.service', ['/etc/systemd/system/multi-user.target.wants'])],
    ['rollback of everything', rollbackScript({ name: 'app.service', file, enabled: 'enabled', active: true, again: 'reload', dirs: ['/etc/systemd/system/a.wants'] })],
    [
      'rollback of a new unit',
      rollbackScript({
        name: 'app.service',
        file: { kind: 'absent', path: '/etc/systemd/system/app.service', created: [] },
        enabled: 'not-found',
        active: false,
        dirs: ['/etc/systemd/system/a.wants'],
      }),
    ],
    ['start', runScript('app.service', 'start', false)],
    ['stop', runScript('app.service', 'stop', false)],
  ])('%s', (_n, script) => {
    expect(() => execFileSync('sh', ['-n', '-c', script])).not.toThrow();
  });
});

describe('systemd_unit: checks at load, before any host', () => {
  const env = (found: boolean) => {
    const checked: Array<[string, Array<string | number>, string[]]> = [];
    return {
      checked,
      env: {
        findSource: async (src: string) => (found ? { file: `/r/templates/${src}` } : { looked: [`/r/templates/${src}`, `/r/${src}`] }),
        checkTemplate: async (file: string, path: Array<string | number>, local: string[]) => {
          checked.push([file, path, local]);
        },
      },
    };
  };
  it('a template that is not there is named at src; one that is, is checked with its own vars', async () => {
    expect(await systemdUnitStep.staticCheck!({ name: 'a.service', src: 'a.hbs' }, env(false).env)).toEqual([
      { path: ['src'], message: 'template "a.hbs" not found (looked in /r/templates/a.hbs, /r/a.hbs)' },
    ]);
    const ok = env(true);
    expect(await systemdUnitStep.staticCheck!({ name: 'a.service', src: 'a.hbs', vars: { port: 1 } }, ok.env)).toEqual([]);
    expect(ok.checked).toEqual([['/r/templates/a.hbs', ['src'], ['port']]]);
  });
  it('content that is not a unit file is named at content; templated content waits for its values', async () => {
    expect(await systemdUnitStep.staticCheck!({ name: 'a.service', content: '[Service]\nExecStart /bin/true\n' }, env(true).env)).toEqual([
      { path: ['content'], message: expect.stringContaining('line 2 is neither a [Section] header nor Key=value') },
    ]);
    expect(await systemdUnitStep.staticCheck!({ name: 'a.service', content: '{{unit}}' }, env(true).env)).toEqual([]);
    expect(await systemdUnitStep.staticCheck!({ name: 'a.service', content: UNIT }, env(true).env)).toEqual([]);
  });
});

describe('systemd_unit: what a change wrote', () => {
  it('the folders above nothing (the unit folder is there); anything once it started the unit', () => {
    const file = { kind: 'absent' as const, path: '/etc/systemd/system/app.service', created: [] };
    expect(systemdUnitStep.wrote!(params(), { name: 'app.service', file })).toEqual([]);
    expect(systemdUnitStep.wrote!(params(), { name: 'app.service', file, active: false })).toEqual(['path:*']);
  });
});
