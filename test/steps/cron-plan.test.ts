import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { cronSchema, cronStep, describeSchedule, editCrontab, parseCheck, type CronState } from '../../src/steps/cron/cron.js';
import { StepError } from '../../src/errors.js';
import { fingerprint } from '../../src/steps/step.js';

const env = { runId: 'R', step: 'Nightly', backupDir: '/var/lib/hostsmith/backups/R' };
// 2026-11-22 12:00 UTC
const NOW = Date.UTC(2026, 10, 22, 12, 0);
const params = (o: Record<string, unknown> = {}) => cronSchema.parse({ name: 'nightly-upgrade', schedule: '0 3 * * *', command: 'apt-get -qq update', ...o });
const state = (text: string | null, o: Partial<CronState> = {}): CronState => ({ user: 'root', text, clock: { now: NOW, tz: 'Etc/UTC' }, ...o });

const OTHER = '# m h dom mon dow command\nMAILTO=ops@example.com\n*/5 * * * * /usr/local/bin/poll  \n\n';
const ENTRY = '# hostsmith: nightly-upgrade\n0 3 * * * apt-get -qq update\n';

describe('cron plan: (params, crontab) → plan', () => {
  const cases: Array<[string, Record<string, unknown>, string | null, { changed: boolean; summary: string | RegExp; next: string | null }]> = [
    [
      'adds to a user without a crontab',
      {},
      null,
      {
        changed: true,
        summary: `add "nightly-upgrade" to root's crontab: 0 3 * * * (At 03:00 AM; next 2026-11-23 03:00, 2026-11-24 03:00, 2026-11-25 03:00 UTC)`,
        next: ENTRY,
      },
    ],
    ['appends after unmanaged lines, keeping them byte for byte', {}, OTHER, { changed: true, summary: /^add /, next: OTHER + ENTRY }],
    ['leaves an entry that is as wanted', {}, OTHER + ENTRY, { changed: false, summary: `"nightly-upgrade" is in root's crontab as wanted`, next: OTHER + ENTRY }],
    [
      'updates the entry in place',
      { schedule: '30 4 * * 1-5' },
      `${ENTRY}${OTHER}`,
      {
        changed: true,
        summary: /^update "nightly-upgrade" in root's crontab: 30 4 \* \* 1-5 \(At 04:30 AM, Monday through Friday; next 2026-11-23 04:30, 2026-11-24 04:30, 2026-11-25 04:30 UTC\)$/,
        next: `# hostsmith: nightly-upgrade\n30 4 * * 1-5 apt-get -qq update\n${OTHER}`,
      },
    ],
    ['adds the entry line when only the marker is left', {}, '# hostsmith: nightly-upgrade\n', { changed: true, summary: /^update /, next: ENTRY }],
    [
      'does not take the next marker as its entry line',
      {},
      '# hostsmith: nightly-upgrade\n# hostsmith: b\n* * * * * b\n',
      { changed: true, summary: /^update /, next: `${ENTRY}# hostsmith: b\n* * * * * b\n` },
    ],
    ['drops a second block of the same name', {}, `${ENTRY}x\n${ENTRY}`, { changed: true, summary: /^update /, next: `${ENTRY}x\n` }],
    [
      'uses @names',
      { schedule: '@daily' },
      null,
      { changed: true, summary: /: @daily \(At 12:00 AM; next 2026-11-23 00:00, 2026-11-24 00:00, 2026-11-25 00:00 UTC\)$/, next: '# hostsmith: nightly-upgrade\n@daily apt-get -qq update\n' },
    ],
    ['removes the entry and keeps the rest', { state: 'absent' }, `${OTHER}${ENTRY}# tail\n`, { changed: true, summary: `remove "nightly-upgrade" from root's crontab`, next: `${OTHER}# tail\n` }],
    ['removes the crontab when nothing is left', { state: 'absent' }, ENTRY, { changed: true, summary: /\(and the crontab, left empty\)$/, next: null }],
    ['absent and no crontab is unchanged', { state: 'absent' }, null, { changed: false, summary: `"nightly-upgrade" is not in root's crontab`, next: null }],
    ['absent and an empty crontab is unchanged', { state: 'absent' }, '', { changed: false, summary: /is not in/, next: '' }],
    ['absent keeps a crontab without final newline as it is', { state: 'absent' }, 'x', { changed: false, summary: /is not in/, next: 'x' }],
    ['another user', { user: 'deploy' }, null, { changed: true, summary: /^add "nightly-upgrade" to deploy's crontab/, next: ENTRY }],
  ];
  it.each(cases)('%s', (_n, o, text, exp) => {
    const p = params(o);
    const plan = cronStep.plan(p, state(text, { user: p.user }), env);
    expect(editCrontab(text, p)).toBe(exp.next);
    expect(plan.changed).toBe(exp.changed);
    if (typeof exp.summary === 'string') expect(plan.summary).toBe(exp.summary);
    else expect(plan.summary).toMatch(exp.summary);
    // Rollback puts back exactly what was read, from an on-host backup (null: there was no crontab).
    expect(plan.undo).toEqual(
      exp.changed
        ? { user: p.user, previous: text === null ? null : { backup: `/var/lib/hostsmith/backups/R/Nightly-ab6b5a4d/crontabs/${p.user}`, sha256: createHash('sha256').update(text).digest('hex') } }
        : null,
    );
  });

  it('shows the crontab diff under crontab(<user>)', () => {
    const plan = cronStep.plan(params({ command: 'new' }), state(`${OTHER}# hostsmith: nightly-upgrade\n0 3 * * * old\n`), env);
    expect(plan.diff).toContain('--- a/crontab(root)');
    expect(plan.diff).toContain('-0 3 * * * old');
    expect(plan.diff).toContain('+0 3 * * * new');
    expect(cronStep.plan(params(), state(null), env).diff).toContain('--- /dev/null');
  });

  it('gives next run times in the host time zone', () => {
    expect(describeSchedule('0 3 * * *', NOW, 'Europe/Berlin')).toBe('At 03:00 AM; next 2026-11-23 03:00, 2026-11-24 03:00, 2026-11-25 03:00 Europe/Berlin');
    // An unknown zone falls back to UTC rather than failing the plan.
    expect(describeSchedule('0 3 * * *', NOW, 'Nowhere/Land')).toMatch(/next 2026-11-23 03:00, .* UTC$/);
  });
});

describe('cron schema', () => {
  const issues = (o: Record<string, unknown>) => {
    const r = cronSchema.safeParse(o);
    return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
  };
  it('defaults to root and present', () => {
    expect(params()).toMatchObject({ user: 'root', state: 'present' });
  });
  it('rejects bad schedules with the schedule path', () => {
    expect(issues({ name: 'x', schedule: '61 * * * *', command: 'c' })).toEqual([expect.stringMatching(/^schedule: invalid cron schedule "61 \* \* \* \*"/)]);
    expect(issues({ name: 'x', schedule: '0 3 * *', command: 'c' })).toEqual([expect.stringMatching(/^schedule: a cron schedule has five fields/)]);
    expect(issues({ name: 'x', schedule: '@reboot', command: 'c' })).toEqual([expect.stringMatching(/^schedule: @reboot/)]);
  });
  it('needs schedule and command only when present', () => {
    expect(issues({ name: 'x' })).toEqual(['schedule: schedule is required with state: present', 'command: command is required with state: present']);
    expect(issues({ name: 'x', state: 'absent' })).toEqual([]);
  });
  it('refuses multi-line values and unknown keys', () => {
    expect(issues({ name: 'x', schedule: '* * * * *', command: 'a\nb' })).toEqual([expect.stringMatching(/^command: .*single line/)]);
    expect(issues({ name: 'a\nb', state: 'absent' })).toEqual([expect.stringMatching(/^name: /)]);
    expect(issues({ name: 'x', state: 'absent', job: 'y' })).toEqual([expect.stringMatching(/job/)]);
  });
});

describe('cron check output', () => {
  const out = (s: string) => Buffer.from(s);
  it('reads the clock, zone and crontab', () => {
    const s = parseCheck('root', { code: 0, stdoutRaw: out(`1795323209 Etc/UTC\n${OTHER}`), stderr: '' });
    expect(s).toEqual({ user: 'root', text: OTHER, clock: { now: 1795323209000, tz: 'Etc/UTC' } });
  });
  it('takes "no crontab for" as none', () => {
    const s = parseCheck('deploy', { code: 1, stdoutRaw: out('1795323209 \n'), stderr: 'no crontab for deploy\n' });
    expect(s).toEqual({ user: 'deploy', text: null, clock: { now: 1795323209000, tz: 'UTC' } });
  });
  it('its state key is the crontab only, so staleness and drift checks are not fooled by the clock', () => {
    const at = (secs: number, text: string) => fingerprint(cronStep.stateKey!(params(), parseCheck('root', { code: 0, stdoutRaw: out(`${secs} Etc/UTC\n${text}`), stderr: '' })));
    expect(at(1795323209, OTHER)).toBe(at(1795329999, OTHER));
    expect(at(1795323209, OTHER)).not.toBe(at(1795323209, OTHER + ENTRY));
  });
  it('plans without next run times when the clock is unknown', () => {
    expect(cronStep.plan(params(), { user: 'root', text: null }, env).summary).toBe(`add "nightly-upgrade" to root's crontab: 0 3 * * * (At 03:00 AM)`);
  });
  it('says what the host said, with a hint when root is needed', () => {
    const call = () => parseCheck('root', { code: 1, stdoutRaw: out('1795323209 Etc/UTC\n'), stderr: 'must be privileged to use -u\n' });
    expect(call).toThrow(StepError);
    expect(call).toThrow(/cannot read root's crontab: must be privileged to use -u \(.*sudo: true.*--sudo\)/);
    // An unknown user is not an error at check time: an earlier step may create it.
    expect(parseCheck('nobody2', { code: 1, stdoutRaw: out('1 UTC\n'), stderr: "crontab:  user `nobody2' unknown\n" })).toMatchObject({ userMissing: true, text: null });
  });
  it('refuses a crontab that is not UTF-8', () => {
    expect(() => parseCheck('root', { code: 0, stdoutRaw: Buffer.concat([out('1 UTC\n'), Buffer.from([0xff, 0x0a])]), stderr: '' })).toThrow(/not UTF-8/);
  });
});

describe('cron: commands and users that are not there yet', () => {
  it('rejects an unescaped % in the command, accepts \\%', () => {
    const bad = cronSchema.safeParse({ name: 'n', schedule: '@daily', command: 'date +%F > /tmp/x' });
    expect(bad.success).toBe(false);
    if (!bad.success) expect(bad.error.issues[0]!.message).toMatch(/unescaped % ends a crontab command/);
    expect(cronSchema.safeParse({ name: 'n', schedule: '@daily', command: 'date +\\%F > /tmp/x' }).success).toBe(true);
  });
  it('reads "user unknown" as no crontab yet, and plans the entry with a note', () => {
    const s = parseCheck('svc', { code: 1, stdoutRaw: Buffer.from('1795000000 Etc/UTC\n'), stderr: "crontab: user 'svc' unknown\n" });
    expect(s).toMatchObject({ user: 'svc', text: null, userMissing: true });
    const plan = cronStep.plan(cronSchema.parse({ name: 'n', schedule: '@daily', command: 'true', user: 'svc' }), s, { runId: 'R', step: 'C', backupDir: '/b' });
    expect(plan.changed).toBe(true);
    expect(plan.summary).toMatch(/user svc does not exist yet: an earlier step must create it$/);
  });
});
