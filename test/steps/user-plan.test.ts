import { describe, expect, it } from 'vitest';
import { mergeEntries } from '../../src/steps/accounts.js';
import { accountCommand, parseUserCheck, planUser, userSchema, type UserState } from '../../src/steps/user/user.js';

const env = { runId: 'R1', step: 'Deploy user', backupDir: '/var/lib/hostsmith/backups/R1' };
const BK = '/var/lib/hostsmith/backups/R1/Deploy_user-bc83310f';
const params = (o: Record<string, unknown>) => userSchema.parse({ name: 'deploy2', ...o });
const dir = (mode: number, uid: number, gid = uid, owner = 'deploy2', group = owner) => ({ kind: 'dir' as const, mode, uid, gid, owner, group });
const file = (mode: number, uid: number, content: string, gid = uid) => ({ kind: 'file' as const, mode, uid, gid, owner: 'deploy2', group: 'deploy2', content: Buffer.from(content) });

/** No such user yet; default homes in /home. */
const fresh = (o: Partial<UserState> = {}): UserState => ({
  user: null,
  primaryGroup: null,
  memberOf: [],
  missingGroups: [],
  sameNameGroup: false,
  defaults: { home: '/home', shell: '/bin/sh' },
  home: '/home/deploy2',
  homeStat: null,
  homeMissing: [],
  mail: false,
  ...o,
});
/** An existing user 1001 with /bin/sh, in cdrom. */
const existing = (o: Partial<UserState> = {}): UserState =>
  fresh({
    user: { uid: 1001, gid: 1001, comment: '', home: '/home/deploy2', shell: '/bin/sh' },
    primaryGroup: 'deploy2',
    memberOf: ['cdrom'],
    sameNameGroup: true,
    homeStat: dir(0o755, 1001),
    ...o,
  });

const K1 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey1 one@x';
const K2 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey2 two@x';

describe('user schema', () => {
  it('accepts the Ansible-like fields and template-rendered strings', () => {
    const p = userSchema.parse({ name: 'app', uid: '1500', system: 'true', groups: 'adm, sudo', shell: '/bin/bash' });
    expect(p).toMatchObject({ name: 'app', uid: 1500, system: true, groups: ['adm', 'sudo'], state: 'present' });
  });
  const bad: Array<[string, Record<string, unknown>, string, RegExp]> = [
    ['a bad name', { name: 'Bad Name' }, 'name', /invalid user name/],
    ['a relative shell', { name: 'a', shell: 'bash' }, 'shell', /absolute path/],
    ['a colon in the comment', { name: 'a', comment: 'a:b' }, 'comment', /cannot contain ":"/],
    ['fields with state absent', { name: 'a', state: 'absent', shell: '/bin/sh' }, 'shell', /no sense with state: absent/],
    ['remove_home when present', { name: 'a', remove_home: false }, 'remove_home', /only for state: absent/],
    ['append without groups', { name: 'a', append: true }, 'append', /append needs groups/],
    ['a key with a line break', { name: 'a', authorized_keys: ['a\nb'] }, 'authorized_keys.0', /one key per list item/],
    ['an unknown field', { name: 'a', password: 'x' }, '', /Unrecognized key.*password/],
  ];
  it.each(bad)('rejects %s', (_n, input, path, message) => {
    const r = userSchema.safeParse(input);
    expect(r.success).toBe(false);
    const issue = r.error!.issues.find((i) => i.path.join('.') === path)!;
    expect(issue.message).toMatch(message);
  });
});

describe('parseUserCheck', () => {
  it('reads what the check script prints', () => {
    const out = [
      'defaults /home /bin/sh',
      'passwd nosudo:x:1001:1001:No Sudo,,,:/home/nosudo:/bin/bash',
      'primary nosudo:x:1001:',
      'samegroup',
      'member adm',
      'member sudo',
      'nogroup app',
      'home /home/nosudo',
      'homedir dir 750 1001 1001 nosudo nosudo',
      'sshdir dir 700 1001 1001 nosudo nosudo',
      'keys file 644 0 0 root root',
      `content ${Buffer.from(`${K1}\n`).toString('base64')}`,
      '',
    ].join('\n');
    const s = parseUserCheck(out, { state: 'present', authorized_keys: [] });
    expect(s).toMatchObject({
      user: { uid: 1001, gid: 1001, comment: 'No Sudo,,,', home: '/home/nosudo', shell: '/bin/bash' },
      primaryGroup: 'nosudo',
      memberOf: ['adm', 'sudo'],
      missingGroups: ['app'],
      sameNameGroup: true,
      home: '/home/nosudo',
      homeStat: { kind: 'dir', mode: 0o750, uid: 1001 },
      sshDir: { kind: 'dir', mode: 0o700 },
      keys: { kind: 'file', mode: 0o644, uid: 0, owner: 'root' },
      mail: false,
    });
    expect(s.keys!.content!.toString()).toBe(`${K1}\n`);
  });
  it('reads an absent user, missing home ancestors (outermost first) and symlinks', () => {
    const s = parseUserCheck('defaults /home /bin/sh\nhome /srv/a/b/u\nmissing /srv/a/b\nmissing /srv/a\nsshdir link\n', { state: 'present', authorized_keys: [] });
    expect(s).toMatchObject({ user: null, homeStat: null, homeMissing: ['/srv/a', '/srv/a/b'], sshDir: { kind: 'link' }, keys: null });
  });
  it('leaves authorized_keys unread when they are not managed', () => {
    const s = parseUserCheck('defaults /home /bin/sh\nhome /home/x\nsshdir dir 700 1 1 x x\n', { state: 'present' });
    expect(s.sshDir).toBeUndefined();
    expect(s.keys).toBeUndefined();
  });
});

describe('planUser: (params, state) → plan', () => {
  const cases: Array<[string, Record<string, unknown>, UserState, { changed: boolean; summary: string; undo: unknown }]> = [
    [
      'creates a user with its private group, home and groups',
      { shell: '/bin/bash', groups: ['sudo'] },
      fresh(),
      {
        changed: true,
        summary: 'create user deploy2 (shell /bin/bash, home /home/deploy2, groups sudo)',
        undo: {
          name: 'deploy2',
          accounts: {
            backup: `${BK}/accounts`,
            touched: { passwd: ['deploy2'], shadow: ['deploy2'], subuid: ['deploy2'], subgid: ['deploy2'], group: ['deploy2', 'sudo'], gshadow: ['deploy2', 'sudo'] },
          },
          remove: ['/home/deploy2', '/var/mail/deploy2'],
        },
      },
    ],
    [
      'joins an existing same-name group instead of creating one, and keeps an existing home',
      { system: true, uid: 900 },
      fresh({ sameNameGroup: true, homeStat: dir(0o755, 0, 0, 'root') }),
      {
        changed: true,
        summary: 'create user deploy2 (uid 900, system, shell /bin/sh, home /home/deploy2 (exists), primary group deploy2 (exists))',
        undo: {
          name: 'deploy2',
          accounts: { backup: `${BK}/accounts`, touched: { passwd: ['deploy2'], shadow: ['deploy2'], subuid: ['deploy2'], subgid: ['deploy2'], group: [], gshadow: [] } },
          remove: ['/var/mail/deploy2'],
        },
      },
    ],
    [
      'removes the outermost home ancestor useradd creates',
      { home: '/srv/apps/deploy2' },
      fresh({ home: '/srv/apps/deploy2', homeMissing: ['/srv/apps'], mail: true }),
      { changed: true, summary: 'create user deploy2 (shell /bin/sh, home /srv/apps/deploy2)', undo: expect.objectContaining({ remove: ['/srv/apps'] }) },
    ],
    [
      'notes groups an earlier step has yet to create',
      { groups: ['app', 'sudo'] },
      fresh({ missingGroups: ['app'] }),
      { changed: true, summary: 'create user deploy2 (shell /bin/sh, home /home/deploy2, groups app, sudo (not there yet: app))', undo: expect.anything() },
    ],
    [
      'modifies shell and groups of an existing user (exact list)',
      { shell: '/bin/bash', groups: ['adm'] },
      existing(),
      {
        changed: true,
        summary: 'modify user deploy2: shell /bin/sh → /bin/bash, groups +adm -cdrom',
        undo: { name: 'deploy2', accounts: { backup: `${BK}/accounts`, touched: { passwd: ['deploy2'], group: ['adm', 'cdrom'], gshadow: ['adm', 'cdrom'] } } },
      },
    ],
    [
      'append only adds groups',
      { groups: ['adm'], append: true },
      existing(),
      { changed: true, summary: 'modify user deploy2: groups +adm', undo: { name: 'deploy2', accounts: { backup: `${BK}/accounts`, touched: { group: ['adm'], gshadow: ['adm'] } } } },
    ],
    [
      'is unchanged when everything matches',
      { shell: '/bin/sh', groups: ['cdrom'], home: '/home/deploy2', comment: '' },
      existing(),
      { changed: false, summary: 'user deploy2 is as wanted', undo: null },
    ],
    [
      'is unchanged with append and groups already there',
      { groups: ['cdrom'], append: true },
      existing({ memberOf: ['cdrom', 'adm'] }),
      { changed: false, summary: 'user deploy2 is as wanted', undo: null },
    ],
    ['ignores system on an existing user', { system: true }, existing(), { changed: false, summary: 'user deploy2 is as wanted', undo: null }],
    [
      'changes the comment, quoted',
      { comment: 'Deploy bot' },
      existing(),
      { changed: true, summary: 'modify user deploy2: comment "" → "Deploy bot"', undo: { name: 'deploy2', accounts: { backup: `${BK}/accounts`, touched: { passwd: ['deploy2'] } } } },
    ],
    ['absent and absent is unchanged', { state: 'absent' }, fresh(), { changed: false, summary: 'user deploy2 is absent', undo: null }],
    [
      'removes a user, backing up its home and mail spool',
      { state: 'absent' },
      existing({ mail: true, memberOf: ['cdrom', 'sudo'] }),
      {
        changed: true,
        summary: 'remove user deploy2 (uid 1001, groups cdrom, sudo, home /home/deploy2 with its contents)',
        undo: {
          name: 'deploy2',
          accounts: {
            backup: `${BK}/accounts`,
            touched: { passwd: ['deploy2'], shadow: ['deploy2'], subuid: ['deploy2'], subgid: ['deploy2'], group: ['deploy2', 'cdrom', 'sudo'], gshadow: ['deploy2', 'cdrom', 'sudo'] },
          },
          restore: [
            { path: '/home/deploy2', backup: `${BK}/home` },
            { path: '/var/mail/deploy2', backup: `${BK}/mail` },
          ],
        },
      },
    ],
    [
      'keeps a home the user does not own',
      { state: 'absent' },
      existing({ homeStat: dir(0o755, 0, 0, 'root') }),
      { changed: true, summary: 'remove user deploy2 (uid 1001, groups cdrom, home /home/deploy2 kept)', undo: expect.objectContaining({ restore: [] }) },
    ],
    [
      'keeps the home with remove_home: false',
      { state: 'absent', remove_home: false },
      existing(),
      { changed: true, summary: 'remove user deploy2 (uid 1001, groups cdrom, home /home/deploy2 kept)', undo: expect.objectContaining({ restore: [] }) },
    ],
  ];
  it.each(cases)('%s', (_n, p, s, expected) => {
    const plan = planUser(params(p), s, env);
    expect(plan.changed).toBe(expected.changed);
    expect(plan.summary).toBe(expected.summary);
    expect(plan.undo).toEqual(expected.undo);
  });

  it('refuses to change the uid of an existing user', () => {
    expect(() => planUser(params({ uid: 2000 }), existing(), env)).toThrow(/exists with uid 1001, not 2000/);
  });
});

describe('planUser: authorized_keys', () => {
  const keyed = (o: Partial<UserState>) => existing({ sshDir: null, keys: null, ...o });
  it('creates the file for a new user and shows the diff', () => {
    const plan = planUser(params({ authorized_keys: [K1, K2] }), fresh({ sshDir: null, keys: null }), env);
    expect(plan.summary).toBe('create user deploy2 (shell /bin/sh, home /home/deploy2, 2 authorized keys)');
    expect(plan.diff).toContain('--- /dev/null');
    expect(plan.diff).toContain(`+${K2}`);
    // The new home goes as a whole on rollback, keys included.
    expect(plan.undo!.keys).toBeUndefined();
  });
  it('creates .ssh and the file for an existing user, remembering they were absent', () => {
    const plan = planUser(params({ authorized_keys: [K1] }), keyed({}), env);
    expect(plan.summary).toBe('modify user deploy2: create /home/deploy2/.ssh/authorized_keys (1 key)');
    expect(plan.undo).toEqual({ name: 'deploy2', keys: { dir: '/home/deploy2/.ssh', file: '/home/deploy2/.ssh/authorized_keys', dirMeta: null, fileMeta: null } });
  });
  it('replaces content exactly, counting added and removed keys, and keeps the old content for rollback', () => {
    const plan = planUser(params({ authorized_keys: [K2] }), keyed({ sshDir: dir(0o700, 1001), keys: file(0o600, 1001, `${K1}\n`) }), env);
    expect(plan.summary).toBe('modify user deploy2: authorized_keys +1 -1');
    expect(plan.diff).toContain(`-${K1}`);
    expect(plan.diff).toContain(`+${K2}`);
    expect(plan.undo!.keys!.fileMeta).toEqual({ mode: 0o600, uid: 1001, gid: 1001, contentBase64: Buffer.from(`${K1}\n`).toString('base64') });
  });
  it('fixes modes and owners', () => {
    const plan = planUser(params({ authorized_keys: [K1] }), keyed({ sshDir: dir(0o755, 1001), keys: { ...file(0o644, 0, `${K1}\n`), owner: 'root', group: 'root' } }), env);
    expect(plan.summary).toBe(
      'modify user deploy2: /home/deploy2/.ssh mode 0755 → 0700, /home/deploy2/.ssh/authorized_keys mode 0644 → 0600, /home/deploy2/.ssh/authorized_keys owner root:root → deploy2:deploy2',
    );
    expect(plan.diff).toBeUndefined();
  });
  it('is unchanged when content, modes and owners match', () => {
    const plan = planUser(params({ authorized_keys: [K1, K2] }), keyed({ sshDir: dir(0o700, 1001), keys: file(0o600, 1001, `${K1}\n${K2}\n`) }), env);
    expect(plan).toEqual({ changed: false, summary: 'user deploy2 is as wanted', undo: null });
  });
  it('an empty list empties the file', () => {
    const plan = planUser(params({ authorized_keys: [] }), keyed({ sshDir: dir(0o700, 1001), keys: file(0o600, 1001, `${K1}\n`) }), env);
    expect(plan.summary).toBe('modify user deploy2: authorized_keys +0 -1');
  });
  it('refuses to write through a symlinked .ssh', () => {
    expect(() => planUser(params({ authorized_keys: [K1] }), keyed({ sshDir: { kind: 'link' } }), env)).toThrow(/symbolic link/);
  });
  it('refuses when the home of an existing user is missing', () => {
    expect(() => planUser(params({ authorized_keys: [K1] }), keyed({ homeStat: null }), env)).toThrow(/home \/home\/deploy2 of user deploy2 does not exist/);
  });
});

describe('accountCommand: (params, state) → useradd/usermod/userdel', () => {
  const cases: Array<[string, Record<string, unknown>, UserState, string]> = [
    [
      'useradd with everything',
      { uid: 1500, system: true, comment: 'Deploy bot', shell: '/bin/bash', groups: ['sudo', 'adm', 'sudo'] },
      fresh(),
      "useradd -r -u 1500 -c 'Deploy bot' -s /bin/bash -d /home/deploy2 -m -G sudo,adm -- deploy2",
    ],
    ['useradd without a home, into the same-name group', { create_home: false }, fresh({ sameNameGroup: true }), 'useradd -d /home/deploy2 -M -g deploy2 -- deploy2'],
    ['usermod with the exact group list', { shell: '/bin/bash', groups: ['adm'] }, existing(), 'usermod -s /bin/bash -G adm -- deploy2'],
    ['usermod -G empty removes every group', { groups: [] }, existing(), "usermod -G '' -- deploy2"],
    ['usermod -a -G adds only', { groups: ['adm', 'cdrom'], append: true }, existing(), 'usermod -a -G adm -- deploy2'],
    ['nothing when only keys change', { authorized_keys: [K1] }, existing({ sshDir: null, keys: null }), ''],
    ['userdel', { state: 'absent' }, existing(), 'userdel -- deploy2'],
  ];
  it.each(cases)('%s', (_n, p, s, cmd) => {
    expect(accountCommand(params(p), s)).toBe(cmd);
  });
});

describe('mergeEntries: putting touched account lines back', () => {
  const before = 'root:x:0:\nadm:x:4:\nsudo:x:27:deploy\nusers:x:100:\n';
  it('drops entries the step added and restores the member lists it changed', () => {
    const after = 'root:x:0:\nadm:x:4:deploy2\nsudo:x:27:deploy,deploy2\nusers:x:100:\ndeploy2:x:1002:\n';
    expect(mergeEntries(before, after, ['deploy2', 'adm', 'sudo'])).toBe(before);
  });
  it('re-inserts removed entries where they were, even several in a row', () => {
    const after = 'root:x:0:\nusers:x:100:\n';
    expect(mergeEntries(before, after, ['adm', 'sudo'])).toBe(before);
  });
  it('re-inserts a removed first line at the top', () => {
    expect(mergeEntries(before, 'adm:x:4:\nsudo:x:27:deploy\nusers:x:100:\n', ['root'])).toBe(before);
  });
  it('restores a member order that re-adding would change', () => {
    const b = 'sudo:x:27:alice,nosudo,bob\n';
    expect(mergeEntries(b, 'sudo:x:27:alice,bob\n', ['sudo'])).toBe(b);
  });
  it('keeps changes others made to entries the step did not touch', () => {
    const after = 'root:x:0:\nadm:x:4:deploy2\nsudo:x:27:deploy\nusers:x:100:carol\ndeploy2:x:1002:\nother:x:1003:\n';
    expect(mergeEntries(before, after, ['deploy2', 'adm'])).toBe('root:x:0:\nadm:x:4:\nsudo:x:27:deploy\nusers:x:100:carol\nother:x:1003:\n');
  });
  it('keeps a missing final newline and bytes it does not understand', () => {
    expect(mergeEntries('a:1\nb:2', 'a:1\nb:3\nc:4', ['b', 'c'])).toBe('a:1\nb:2');
    expect(mergeEntries('', 'x:1\n', ['x'])).toBe('');
    expect(mergeEntries('é:1\n# comment\n', '# comment\n', ['é'])).toBe('é:1\n# comment\n');
  });
});
