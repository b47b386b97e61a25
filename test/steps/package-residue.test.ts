import { execFileSync } from 'node:child_process';
import { chmodSync, cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { dropAddedMembers, entryNames, mergeEntries } from '../../src/steps/accounts.js';
import { ownersScript, parseOwners, treeManifestScript } from '../../src/steps/package/apt.js';
import { addedAccounts, decideAccounts, residueDir } from '../../src/steps/package/package.js';

const PASSWD_BEFORE = 'root:x:0:0:root:/root:/bin/bash\nsshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n';
const PASSWD_NOW = `${PASSWD_BEFORE}messagebus:x:101:103::/nonexistent:/usr/sbin/nologin\nalice:x:1001:1001::/home/alice:/bin/bash\n`;
const GROUP_BEFORE = 'root:x:0:\nadm:x:4:\nssl-cert:x:110:postgres\n';

describe('addedAccounts: the entries the install added', () => {
  it('names the entries in now but not before, with uid and primary gid', () => {
    expect(addedAccounts(PASSWD_BEFORE, PASSWD_NOW, null)).toEqual([
      { name: 'messagebus', id: 101, gid: 103 },
      { name: 'alice', id: 1001, gid: 1001 },
    ]);
  });

  it('leaves out what the install had not added (someone added it later)', () => {
    const after = `${PASSWD_BEFORE}messagebus:x:101:103::/nonexistent:/usr/sbin/nologin\n`;
    expect(addedAccounts(PASSWD_BEFORE, PASSWD_NOW, after).map((a) => a.name)).toEqual(['messagebus']);
  });

  it('a group line has no primary gid; nothing added gives nothing', () => {
    expect(addedAccounts(GROUP_BEFORE, `${GROUP_BEFORE}messagebus:x:103:\n`, null)).toEqual([{ name: 'messagebus', id: 103 }]);
    expect(addedAccounts(GROUP_BEFORE, GROUP_BEFORE, GROUP_BEFORE)).toEqual([]);
  });
});

describe('decideAccounts: what goes, what stays in use', () => {
  const users = [{ name: 'messagebus', id: 101, gid: 103 }];
  const groups = [{ name: 'messagebus', id: 103 }];

  it('unused: user and group go from every file, the user from member lists too', () => {
    expect(decideAccounts(users, groups, [], PASSWD_NOW)).toEqual({
      touched: { passwd: ['messagebus'], shadow: ['messagebus'], subuid: ['messagebus'], subgid: ['messagebus'], group: ['messagebus'], gshadow: ['messagebus'] },
      dropMembers: ['messagebus'],
      kept: [],
    });
  });

  it('a user owning a file stays, and so does its primary group', () => {
    const d = decideAccounts(users, groups, [{ uid: 101, gid: 0, what: '/srv/keep' }], PASSWD_NOW);
    expect(d.touched).toEqual({});
    expect(d.dropMembers).toEqual([]);
    expect(d.kept).toEqual([
      { kind: 'user', name: 'messagebus', id: 101, why: 'it still owns /srv/keep' },
      { kind: 'group', name: 'messagebus', id: 103, why: 'it is the primary group of messagebus' },
    ]);
  });

  it('a group owning a file stays while its unused user goes; a process counts as use', () => {
    const d = decideAccounts(users, groups, [{ uid: 0, gid: 103, what: '/var/run/bus' }], PASSWD_NOW);
    expect(d.touched).toEqual({ passwd: ['messagebus'], shadow: ['messagebus'], subuid: ['messagebus'], subgid: ['messagebus'] });
    expect(d.kept).toEqual([{ kind: 'group', name: 'messagebus', id: 103, why: '/var/run/bus still belongs to it' }]);
    const p = decideAccounts(users, [], [{ uid: 101, gid: 103, what: 'process 772 (dbus-daemon)' }], PASSWD_NOW);
    expect(p.kept).toEqual([{ kind: 'user', name: 'messagebus', id: 101, why: 'process 772 (dbus-daemon) runs as it' }]);
  });

  it('a new group that an older user now has as primary group stays', () => {
    const passwd = `${PASSWD_BEFORE}bob:x:1002:103::/home/bob:/bin/sh\n`;
    expect(decideAccounts([], groups, [], passwd).kept).toEqual([{ kind: 'group', name: 'messagebus', id: 103, why: 'it is the primary group of bob' }]);
  });
});

describe('dropAddedMembers: users out of the member lists they joined', () => {
  it('removes only memberships that are new, byte for byte otherwise', () => {
    const before = 'adm:x:4:syslog\nssl-cert:x:110:postgres\nstaff:x:50:\n';
    const now = 'adm:x:4:syslog,messagebus\nssl-cert:x:110:postgres\nstaff:x:50:messagebus,alice\nnew:x:120:messagebus\n';
    expect(dropAddedMembers('group', before, now, ['messagebus'])).toBe('adm:x:4:syslog\nssl-cert:x:110:postgres\nstaff:x:50:alice\nnew:x:120:messagebus\n');
  });

  it('keeps a membership the user already had, and a file without trailing newline', () => {
    const before = 'adm:x:4:messagebus';
    expect(dropAddedMembers('group', before, 'adm:x:4:messagebus', ['messagebus'])).toBe('adm:x:4:messagebus');
  });

  it('gshadow: administrators and members; other files untouched', () => {
    const before = 'adm:*::syslog\n';
    const now = 'adm:*:messagebus:syslog,messagebus\n';
    expect(dropAddedMembers('gshadow', before, now, ['messagebus'])).toBe('adm:*::syslog\n');
    expect(dropAddedMembers('passwd', before, now, ['messagebus'])).toBe(now);
  });

  it('with mergeEntries, gives back the file from before when nobody else changed it', () => {
    const before = 'root:x:0:\nadm:x:4:syslog\n';
    const now = 'root:x:0:\nadm:x:4:syslog,messagebus\nmessagebus:x:103:\n';
    expect(dropAddedMembers('group', before, mergeEntries(before, now, ['messagebus']), ['messagebus'])).toBe(before);
  });
});

describe('entryNames', () => {
  it('lists the first fields, skipping empty lines', () => {
    expect(entryNames('root:x:0:\n\nadm:x:4:\n')).toEqual(['root', 'adm']);
    expect(entryNames('')).toEqual([]);
  });
});

describe('residueDir', () => {
  it('is decided by the run backup folder and step name alone, as the other steps’ backups', () => {
    const a = residueDir({ backupDir: '/var/lib/hostsmith/backups/r1', step: 'Baseline', runId: 'r1' });
    expect(a).toMatch(/^\/var\/lib\/hostsmith\/backups\/r1\/Baseline-[0-9a-f]{8}\/package$/);
    expect(residueDir({ backupDir: '/var/lib/hostsmith/backups/r1', step: 'Baseline', runId: 'other' })).toBe(a);
    expect(residueDir({ backupDir: '/var/lib/hostsmith/backups/r1', step: 'Baseline2', runId: 'r1' })).not.toBe(a);
  });
});

describe('parseOwners / ownersScript', () => {
  it('parses files and processes', () => {
    expect(parseOwners('101 0 file /srv/keep dir\n101 103 proc 772 dbus-daemon\n0 103 proc 9 \nnoise\n')).toEqual([
      { uid: 101, gid: 0, what: '/srv/keep dir' },
      { uid: 101, gid: 103, what: 'process 772 (dbus-daemon)' },
      { uid: 0, gid: 103, what: 'process 9' },
    ]);
  });

  it('searches processes and local file systems for exactly the given ids, skipping the backups', () => {
    const s = ownersScript([101], [103], '/var/lib/hostsmith/backups');
    expect(s).toContain('\\( -uid 101 -o -gid 103 \\)');
    expect(s).toMatch(/-path '?\/var\/lib\/hostsmith\/backups'? -prune/);
    expect(s).toContain('-xdev');
    expect(ownersScript([], [], '/x')).toBe('exit 0');
  });

  it('runs in sh: finds a file of the given uid in a mounted file system, once', () => {
    const root = mkdtempSync(join(tmpdir(), 'owners-'));
    // An id nobody on this machine uses, new for each run: only the files made here carry it (a
    // fixed one was found first in the files of an earlier run that was killed before it cleaned up,
    // and the script reports each id once).
    const id = 3_000_000 + Math.floor(Math.random() * 1_000_000);
    mkdirSync(join(root, 'a'));
    writeFileSync(join(root, 'a/one'), '1');
    writeFileSync(join(root, 'a/two'), '2');
    try {
      try {
        execFileSync('chown', ['-R', `${id}:${id}`, join(root, 'a')]);
      } catch {
        return; // not root: cannot chown (the e2e tests cover this on real hosts)
      }
      const owned = parseOwners(execFileSync('sh', ['-c', ownersScript([id], [], '/nonexistent')], { encoding: 'utf8' }));
      const mine = owned.filter((o) => o.what.startsWith(root));
      expect(mine).toHaveLength(1);
      expect(mine[0]).toMatchObject({ uid: id, gid: id });
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  }, 120_000);
});

describe('treeManifestScript', () => {
  const manifest = (dir: string) => execFileSync('sh', ['-c', treeManifestScript(dir)], { encoding: 'utf8' });

  it('is equal for a byte-exact copy and differs for any change of content, mode or file', () => {
    const root = mkdtempSync(join(tmpdir(), 'ucf-'));
    const a = join(root, 'ucf');
    mkdirSync(join(a, 'cache'), { recursive: true });
    writeFileSync(join(a, 'hashfile'), 'abc  /etc/x\n');
    writeFileSync(join(a, 'cache', ':etc:x'), 'x\n');
    cpSync(a, join(root, 'copy'), { recursive: true, preserveTimestamps: true });
    const m = manifest(a);
    expect(m).toMatch(/^f 644 \S+ \.\/hashfile\t[0-9a-f]{64} {2}\.\/hashfile$/m);
    expect(manifest(join(root, 'copy'))).toBe(m);
    writeFileSync(join(root, 'copy', 'hashfile'), 'abd  /etc/x\n');
    expect(manifest(join(root, 'copy'))).not.toBe(m);
    writeFileSync(join(root, 'copy', 'hashfile'), 'abc  /etc/x\n');
    chmodSync(join(root, 'copy', 'hashfile'), 0o600);
    expect(manifest(join(root, 'copy'))).not.toBe(m);
    chmodSync(join(root, 'copy', 'hashfile'), 0o644);
    writeFileSync(join(root, 'copy', 'hashfile.0'), '');
    expect(manifest(join(root, 'copy'))).not.toBe(m);
    expect(manifest(join(root, 'none'))).toBe('absent\n');
  });
});
