/**
 * Footprints: what each step type says it reads and may write, from its params alone, and the
 * overlap rule the engine decides every question with (known after apply, dropped batched reads,
 * a run's own newer step moving an older one's state).
 */
import { describe, expect, it } from 'vitest';
import { meets, overlaps, widen } from '../../src/steps/footprint.js';
import { stepTypes } from '../../src/steps/registry.js';
import { changeWrites } from '../../src/steps/step.js';

describe('overlap: two footprint items name a common thing', () => {
  const rows: Array<[string, string, boolean]> = [
    ['path:/etc/nginx', 'path:/etc/nginx/sites-enabled/x', true],
    ['path:/etc/nginx/sites-enabled/x', 'path:/etc/nginx', true],
    ['path:/etc/nginx', 'path:/etc/nginx2', false],
    ['path:*', 'path:/etc/anything', true],
    ['user:alice', 'user:alice', true],
    ['user:alice', 'user:bob', false],
    ['user:*', 'user:bob', true],
    ['user:alice', 'cron:alice', false],
    ['group:web', 'user:web', false],
    ['*', 'service:nginx', true],
    ['path:/', 'path:/etc', true],
    ['pkg:nginx', 'pkg:nginx-light', false],
  ];
  it.each(rows)('%s meets %s: %s', (w, r, want) => {
    expect(overlaps(w, r)).toBe(want);
    expect(overlaps(r, w)).toBe(want);
  });

  it('meets: any write against any read', () => {
    expect(meets(['user:a', 'path:/srv/x'], ['path:/srv/x/y'])).toBe(true);
    expect(meets(['user:a'], ['group:a', 'cron:a'])).toBe(false);
    expect(meets([], ['*'])).toBe(false);
  });

  it('a name not known until apply stands for every name of its kind', () => {
    expect(widen(['path:/srv/(known after apply)/x', 'user:bob'], '(known after apply)')).toEqual(['path:*', 'user:bob']);
  });
});

/** (type, params) → footprint, as the schema parses the params. */
const rows: Array<[string, Record<string, unknown>, { reads: string[]; writes: string[] }]> = [
  ['file', { path: '/etc/motd', content: 'hi' }, { reads: ['path:/etc/motd'], writes: ['path:/etc/motd'] }],
  ['file', { path: '/srv/app', state: 'directory' }, { reads: ['path:/srv/app'], writes: ['path:/srv/app'] }],
  ['template', { src: 'x.hbs', dest: '/etc/app.conf' }, { reads: ['path:/etc/app.conf'], writes: ['path:/etc/app.conf'] }],
  ['line', { path: '/etc/hosts', line: '127.0.0.2 x' }, { reads: ['path:/etc/hosts'], writes: ['path:/etc/hosts'] }],
  ['cron', { name: 'job', schedule: '0 3 * * *', command: 'true', user: 'alice' }, { reads: ['user:alice', 'cron:alice'], writes: ['cron:alice', 'path:/var/spool/cron'] }],
  ['service', { name: 'nginx', state: 'started' }, { reads: ['service:nginx'], writes: expect.arrayContaining(['service:nginx', 'path:/run', 'path:/var/lib', 'path:/var/log', 'path:/etc/rc2.d']) }],
  ['command', { run: 'make' }, { reads: [], writes: ['*'] }],
  ['command', { run: 'make', creates: '/srv/built', removes: '/srv/dirty' }, { reads: ['path:/srv/built', 'path:/srv/dirty'], writes: ['path:/srv/built', 'path:/srv/dirty'] }],
  ['package', { install: ['nginx-light'] }, { reads: ['pkg:nginx-light', 'apt:lists'], writes: ['*'] }],
  ['package', { install: ['hello=2.10-3'], remove: ['nano'] }, { reads: ['pkg:hello', 'pkg:nano', 'apt:lists'], writes: ['*'] }],
  ['package', { update_cache: true }, { reads: ['apt:lists'], writes: ['apt:lists', 'path:/var/lib/apt/lists'] }],
  [
    'group',
    { name: 'web' },
    { reads: ['group:web'], writes: ['group:web', 'path:/etc/passwd', 'path:/etc/shadow', 'path:/etc/group', 'path:/etc/gshadow', 'path:/etc/subuid', 'path:/etc/subgid', 'path:/var/mail'] },
  ],
  [
    'user',
    { name: 'alice', groups: ['web', 'sudo'] },
    {
      reads: ['user:alice', 'group:alice', 'path:/home/alice', 'cron:alice', 'group:web', 'group:sudo'],
      writes: [
        'user:alice',
        'group:alice',
        'path:/home/alice',
        'cron:alice',
        'group:web',
        'group:sudo',
        'path:/etc/passwd',
        'path:/etc/shadow',
        'path:/etc/group',
        'path:/etc/gshadow',
        'path:/etc/subuid',
        'path:/etc/subgid',
        'path:/var/mail',
      ],
    },
  ],
  ['user', { name: 'svc', home: '/srv/svc' }, expect.objectContaining({ reads: ['user:svc', 'group:svc', 'path:/srv/svc', 'cron:svc'] })],
];

describe('params → footprint, per step type', () => {
  it.each(rows)('%s %j', (type, params, want) => {
    const t = stepTypes[type]!;
    const parsed = t.schema.parse(params);
    expect(t.footprint(parsed)).toEqual(want);
  });

  it('every step type declares one', () => {
    for (const [key, t] of Object.entries(stepTypes)) expect(typeof t.footprint, key).toBe('function');
  });
});

describe('what a change wrote: its footprint and what its undo data says it made', () => {
  it('a service never writes config by its footprint, but once run, any file read may be stale', () => {
    const t = stepTypes.service!;
    const p = t.schema.parse({ name: 'ssh', state: 'started' });
    expect(meets(t.footprint(p).writes, ['path:/etc/ssh/sshd_config'])).toBe(false);
    expect(changeWrites(t, p, null)).toContain('path:*');
  });

  it('a command with creates writes that path for plans; once run, anything', () => {
    const t = stepTypes.command!;
    const p = t.schema.parse({ run: 'make', creates: '/srv/built' });
    expect(meets(t.footprint(p).writes, ['path:/etc/x'])).toBe(false);
    expect(changeWrites(t, p, null)).toContain('*');
  });

  it('a file made where its folders were missing wrote those folders too', () => {
    const t = stepTypes.file!;
    const p = t.schema.parse({ path: '/srv/a/b/c', content: 'x' });
    expect(changeWrites(t, p, { kind: 'absent', path: '/srv/a/b/c', created: ['/srv/a', '/srv/a/b'] })).toEqual(['path:/srv/a/b/c', 'path:/srv/a', 'path:/srv/a/b']);
    expect(changeWrites(t, p, { kind: 'file', path: '/srv/a/b/c', backup: '/b' })).toEqual(['path:/srv/a/b/c']);
  });

  it('a group change wrote the entries it touched', () => {
    const t = stepTypes.group!;
    const p = t.schema.parse({ name: 'web' });
    expect(changeWrites(t, p, { backup: '/b', touched: { group: ['web'], gshadow: ['web'], passwd: ['alice'] } })).toEqual(expect.arrayContaining(['user:alice', 'group:web']));
  });

  it('a user change wrote the entries it touched', () => {
    const t = stepTypes.user!;
    const p = t.schema.parse({ name: 'alice' });
    expect(changeWrites(t, p, { name: 'alice', accounts: { backup: '/b', touched: { passwd: ['alice'], group: ['alice', 'web'] } } })).toEqual(expect.arrayContaining(['group:web']));
  });
});

describe('journaled undo data must belong to its step (a corrupt or tampered journal is refused)', () => {
  const B = '/var/lib/hostsmith/backups/R1/S-1234abcd';
  const rows: Array<[string, Record<string, unknown>, Record<string, unknown>, RegExp | undefined]> = [
    ['file', { path: '/etc/motd', content: 'x' }, { kind: 'file', path: '/etc/motd', backup: `${B}/etc/motd` }, undefined],
    ['file', { path: '/etc/motd', content: 'x' }, { kind: 'file', path: '/etc/shadow', backup: `${B}/etc/shadow` }, /not the step's \/etc\/motd/],
    ['file', { path: '/etc/motd', content: 'x' }, { kind: 'file', path: '/etc/motd', backup: '/etc/shadow' }, /not in a hostsmith backup folder/],
    ['file', { path: '/srv/a/b', content: 'x' }, { kind: 'absent', path: '/srv/a/b', created: ['/srv/a'] }, undefined],
    ['file', { path: '/srv/a/b', content: 'x' }, { kind: 'absent', path: '/srv/a/b', created: ['/etc'] }, /not a folder above/],
    ['template', { src: 't.hbs', dest: '/etc/app.conf' }, { kind: 'absent', path: '/etc/other.conf', created: [] }, /not the step's/],
    ['line', { path: '/etc/hosts', line: 'x' }, { kind: 'file', path: '/etc/hosts', backup: `${B}/etc/passwd` }, /not the backup of \/etc\/hosts/],
    ['cron', { name: 'j', schedule: '0 1 * * *', command: 'true', user: 'alice' }, { user: 'root', previous: null }, /root.*not alice's/],
    ['cron', { name: 'j', schedule: '0 1 * * *', command: 'true', user: 'alice' }, { user: 'alice', previous: { backup: `${B}/crontab`, sha256: 'x' } }, undefined],
    ['service', { name: 'nginx', state: 'started' }, { name: 'ssh', init: 'sysvinit', running: false }, /service "ssh", not nginx/],
    ['command', { run: 'a', rollback: 'b' }, { run: 'b' }, undefined],
    ['command', { run: 'a', rollback: 'b' }, { run: 'rm -rf /' }, /not the step's own rollback/],
    ['group', { name: 'web' }, { backup: `${B}/accounts`, touched: { group: ['web'] } }, undefined],
    ['group', { name: 'web' }, { backup: `${B}/accounts`, touched: { group: ['sudo'] } }, /not only web/],
    ['user', { name: 'alice' }, { name: 'alice', remove: ['/home/alice', '/var/mail/alice'] }, undefined],
    ['user', { name: 'alice' }, { name: 'alice', remove: ['/etc'] }, /would remove "\/etc"/],
    ['user', { name: 'alice' }, { name: 'bob' }, /user "bob", not alice/],
    ['user', { name: 'alice' }, { name: 'alice', keys: { file: '/root/.ssh/authorized_keys2' } }, /not an authorized_keys file/],
  ];
  it.each(rows)('%s %j with %j', async (type, params, undo, want) => {
    const { undoMismatch } = await import('../../src/steps/step.js');
    const t = stepTypes[type]!;
    const why = undoMismatch(t, t.schema.parse(params), undo);
    if (want) expect(why).toMatch(want);
    else expect(why).toBeUndefined();
  });
});
