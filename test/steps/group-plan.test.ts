import { describe, expect, it } from 'vitest';
import { groupCommand, groupSchema, groupStep, parseGroupCheck, type GroupState } from '../../src/steps/group/group.js';

const env = { runId: 'R1', step: 'App group', backupDir: '/var/lib/hostsmith/backups/R1' };
const BK = '/var/lib/hostsmith/backups/R1/App_group-4229a49f/accounts';
const params = (o: Record<string, unknown>) => groupSchema.parse({ name: 'app', ...o });
const none: GroupState = { group: null, gidOwner: null, primaryOf: [] };
const app = (gid = 1001, members: string[] = [], primaryOf: string[] = []): GroupState => ({ group: { gid, members }, gidOwner: null, primaryOf });

describe('group schema', () => {
  it('accepts gid as a number or rendered string and system as a flag', () => {
    expect(params({ gid: '1500', system: 'false' })).toEqual({ name: 'app', gid: 1500, system: false, state: 'present' });
  });
  it.each([
    [{ name: 'app', state: 'absent', gid: 5 }, 'gid', /no sense with state: absent/],
    [{ name: 'App!' }, 'name', /invalid group name/],
    [{ name: 'app', gid: -1 }, 'gid', /./],
    [{ name: 'app', members: ['x'] }, '', /Unrecognized key.*members/],
  ])('rejects %j', (input, path, message) => {
    const r = groupSchema.safeParse(input);
    expect(r.success).toBe(false);
    expect(r.error!.issues.find((i) => i.path.join('.') === path)!.message).toMatch(message);
  });
});

describe('parseGroupCheck', () => {
  it('reads the group, the owner of the wanted gid and whose primary group it is', () => {
    expect(parseGroupCheck('group app:x:1001:alice,bob\ngidowner other:x:1500:\nprimaryof app\nprimaryof svc\n')).toEqual({
      group: { gid: 1001, members: ['alice', 'bob'] },
      gidOwner: 'other',
      primaryOf: ['app', 'svc'],
    });
    expect(parseGroupCheck('')).toEqual(none);
  });
});

describe('group plan', () => {
  const touched = { group: ['app'], gshadow: ['app'] };
  const cases: Array<[string, Record<string, unknown>, GroupState, { changed: boolean; action?: string; summary: string; undo: unknown }, string]> = [
    ['creates a group', {}, none, { changed: true, action: 'create', summary: 'create group app', undo: { backup: BK, touched } }, 'groupadd -- app'],
    [
      'creates a system group with a gid',
      { gid: 1500, system: true },
      none,
      { changed: true, action: 'create', summary: 'create group app (gid 1500, system)', undo: { backup: BK, touched } },
      'groupadd -r -g 1500 -- app',
    ],
    ['leaves a matching group alone', { gid: 1001 }, app(1001), { changed: false, summary: 'group app is as wanted (gid 1001)', undo: null }, ''],
    ['leaves a group alone when no gid is asked for', {}, app(1001), { changed: false, summary: 'group app is as wanted (gid 1001)', undo: null }, ''],
    [
      'changes the gid, and the primary gid of its users with it',
      { gid: 1500 },
      app(1001, [], ['svc']),
      { changed: true, summary: 'modify group app: gid 1001 → 1500; primary group of svc, whose gid follows', undo: { backup: BK, touched: { ...touched, passwd: ['svc'] } } },
      'groupmod -g 1500 -- app',
    ],
    [
      'removes a group, naming its members',
      { state: 'absent' },
      app(1001, ['alice', 'bob']),
      { changed: true, action: 'remove', summary: 'remove group app (gid 1001, members alice, bob)', undo: { backup: BK, touched } },
      'groupdel -- app',
    ],
    ['absent and absent is unchanged', { state: 'absent' }, none, { changed: false, summary: 'group app is absent', undo: null }, ''],
  ];
  it.each(cases)('%s', (_n, p, s, expected, cmd) => {
    const plan = groupStep.plan(params(p), s, env);
    expect(plan).toEqual(expected);
    expect(groupCommand(params(p), s)).toBe(cmd);
  });

  it('refuses a gid another group has', () => {
    expect(() => groupStep.plan(params({ gid: 1500 }), { ...none, gidOwner: 'other' }, env)).toThrow(/gid 1500 is already used by group other/);
  });
  it('refuses to remove the primary group of a user', () => {
    expect(() => groupStep.plan(params({ state: 'absent' }), app(1001, [], ['svc']), env)).toThrow(/primary group of svc; remove or change that user first/);
  });
});
