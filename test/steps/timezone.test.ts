/**
 * `timezone`: the name's shape at load, params → footprint, and params + what the host shows
 * (/etc/localtime, /etc/timezone) → plan; a zone the host lacks is a step error naming tzdata.
 */
import { describe, expect, it } from 'vitest';
import { StepError } from '../../src/errors.js';
import type { PathState } from '../../src/steps/file-state.js';
import { planTimezone, timezoneSchema, timezoneStep, zoneThere, type TimezoneState } from '../../src/steps/timezone/timezone.js';

const env = { runId: 'R1', step: 'Berlin', backupDir: '/var/lib/hostsmith/backups/R1' };
const params = (name = 'Europe/Berlin') => timezoneSchema.parse({ name });
const file = (content: string): PathState => ({ kind: 'file', content: Buffer.from(content), mode: 0o644, owner: 'root', group: 'root', missing: [] });
const link = (target: string): PathState => ({ kind: 'link', target, mode: 0o777, owner: 'root', group: 'root', missing: [] });
const absent: PathState = { kind: 'absent', missing: [] };
const state = (o: Partial<TimezoneState> = {}): TimezoneState => ({ localtime: link('/usr/share/zoneinfo/Etc/UTC'), timezone: file('Etc/UTC\n'), ...o });

describe('timezone: the name, checked at load', () => {
  it.each(['Europe/Berlin', 'Etc/UTC', 'UTC', 'America/Argentina/Buenos_Aires', 'Etc/GMT+5', 'Etc/GMT-14', 'America/Port-au-Prince'])('%s is a zone name', (name) => {
    expect(timezoneSchema.safeParse({ name }).success).toBe(true);
  });
  it.each([
    ['../../etc/shadow', /no \\"\.\\" or empty part/],
    ['Europe/../../../etc/passwd', /no \\"\.\\" or empty part/],
    ['Europe//Berlin', /empty part/],
    ['/Europe/Berlin', /empty part/],
    ['Europe/Berlin ', /letters, digits/],
    ['Europe/Berlin;reboot', /letters, digits/],
    ['', /letters, digits/],
    ['-x', /does not start with/],
  ])('%j is refused', (name, why) => {
    const r = timezoneSchema.safeParse({ name });
    expect(r.success).toBe(false);
    expect(JSON.stringify(r.error?.issues)).toMatch(why);
  });
  it('nothing but the name', () => {
    expect(timezoneSchema.safeParse({ name: 'UTC', utc: true }).success).toBe(false);
  });
});

describe('timezone: footprint', () => {
  it('reads the zone file and both paths; writes only the two paths', () => {
    expect(timezoneStep.footprint(params())).toEqual({
      reads: ['path:/etc/localtime', 'path:/etc/timezone', 'path:/usr/share/zoneinfo/Europe/Berlin'],
      writes: ['path:/etc/localtime', 'path:/etc/timezone'],
    });
  });
});

describe('timezone: plan (params + host state → what changes)', () => {
  it('from UTC: relink and rewrite; the old link target and the old file kept for rollback', () => {
    const plan = planTimezone(params(), state(), env);
    expect(plan.changed).toBe(true);
    expect(plan.summary).toBe('set time zone Europe/Berlin (was Etc/UTC): /etc/localtime: Etc/UTC → Europe/Berlin; /etc/timezone: "Etc/UTC" → "Europe/Berlin"');
    expect(plan.diff).toContain('-Etc/UTC\n+Europe/Berlin');
    expect(plan.undo).toEqual({
      name: 'Europe/Berlin',
      localtime: { kind: 'link', path: '/etc/localtime', target: '/usr/share/zoneinfo/Etc/UTC', mode: 0o777, owner: 'root', group: 'root' },
      timezone: expect.objectContaining({ kind: 'file', path: '/etc/timezone', backup: expect.stringMatching(/^\/var\/lib\/hostsmith\/backups\/R1\/Berlin-[0-9a-f]{8}\/etc\/timezone$/) }),
    });
  });

  it('already set: unchanged', () => {
    const plan = planTimezone(params(), state({ localtime: link('/usr/share/zoneinfo/Europe/Berlin'), timezone: file('Europe/Berlin\n') }), env);
    expect(plan).toMatchObject({ changed: false, undo: null, summary: 'time zone is Europe/Berlin (/etc/localtime links to /usr/share/zoneinfo/Europe/Berlin, /etc/timezone says so)' });
  });

  it('a relative link, as timedatectl writes it, to the same zone is right', () => {
    expect(planTimezone(params(), state({ localtime: link('../usr/share/zoneinfo/Europe/Berlin'), timezone: file('Europe/Berlin') }), env).changed).toBe(false);
  });

  it('only /etc/timezone drifted: the link is left alone', () => {
    const plan = planTimezone(params(), state({ localtime: link('/usr/share/zoneinfo/Europe/Berlin') }), env);
    expect(plan.summary).toBe('set time zone Europe/Berlin (was Europe/Berlin): /etc/timezone: "Etc/UTC" → "Europe/Berlin"');
    expect(plan.undo).toMatchObject({ localtime: null });
  });

  it('neither there: both created, undo removes both', () => {
    const plan = planTimezone(params(), { localtime: absent, timezone: absent }, env);
    expect(plan.summary).toBe('set time zone Europe/Berlin: link /etc/localtime → /usr/share/zoneinfo/Europe/Berlin; create /etc/timezone');
    expect(plan.undo).toMatchObject({ localtime: { kind: 'absent', path: '/etc/localtime' }, timezone: { kind: 'absent', path: '/etc/timezone' } });
  });

  it('a copied zone file at /etc/localtime: replaced by the link, the file backed up', () => {
    const plan = planTimezone(params(), state({ localtime: file('TZif2…') }), env);
    expect(plan.summary).toMatch(/\/etc\/localtime: a copied zone file → a link to \/usr\/share\/zoneinfo\/Europe\/Berlin/);
    expect(plan.undo?.localtime).toMatchObject({ kind: 'file', path: '/etc/localtime', backup: expect.stringMatching(/\/etc\/localtime$/) });
  });

  it('a folder at /etc/localtime, or /etc/timezone as a link, is refused', () => {
    expect(() => planTimezone(params(), state({ localtime: { kind: 'directory', mode: 0o755, owner: 'root', group: 'root', missing: [] } }), env)).toThrow(StepError);
    expect(() => planTimezone(params(), state({ timezone: link('/home/eve/tz') }), env)).toThrow(/symbolic link/);
  });
});

describe('timezone: a zone the host lacks', () => {
  it.each([
    ['notzdata', /install tzdata first/],
    ['missing', /no time zone Europe\/Berlin on this host .* or install tzdata/],
    ['notafile', /not a time zone file/],
  ])('%s', (how, why) => {
    expect(() => zoneThere('Europe/Berlin', how)).toThrow(why);
  });
  it('a zone file there: fine', () => {
    expect(() => zoneThere('Europe/Berlin', 'zone')).not.toThrow();
  });
});

describe('timezone: undo data', () => {
  const undo = { name: 'Europe/Berlin', localtime: { kind: 'link', path: '/etc/localtime', target: '/usr/share/zoneinfo/Etc/UTC' }, timezone: { kind: 'absent', path: '/etc/timezone', created: [] } };
  it('says what rollback puts back', () => {
    expect(timezoneStep.undoSummary!(undo)).toBe('remove /etc/timezone; put back link /etc/localtime; link target /usr/share/zoneinfo/Etc/UTC');
  });
  it.each([
    [{ ...undo, name: 'Etc/UTC' }, /for time zone "Etc\/UTC"/],
    [{ ...undo, localtime: { kind: 'link', path: '/etc/passwd' } }, /not the step's \/etc\/localtime/],
    [{ ...undo, timezone: { kind: 'absent', path: '/etc/timezone', created: ['/var'] } }, /would remove "\/var"/],
    [{ ...undo, timezone: 'x' }, /not an object/],
  ])('refuses journaled data that is not its own: %j', (u, why) => {
    expect(timezoneStep.undoMismatch!(params(), u)).toMatch(why);
  });
  it('accepts its own', () => {
    expect(timezoneStep.undoMismatch!(params(), undo)).toBeUndefined();
  });
  it('the watchdog script puts back both, trying each', () => {
    const script = timezoneStep.hostRollback!(params(), undo as never, { host: 'h', runId: 'R1', step: 's', backupDir: '/b', init: 'sysvinit' });
    expect(script).toContain('ln -sfT -- /usr/share/zoneinfo/Etc/UTC');
    // both paths, then a running systemd-timedated told to read the zone again
    expect(script.match(/\|\| hs_rc=1/g)).toHaveLength(3);
    expect(script.indexOf('systemctl stop systemd-timedated.service')).toBeGreaterThan(script.lastIndexOf('ln -sfT'));
  });
});
