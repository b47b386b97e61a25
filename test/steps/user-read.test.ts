/**
 * The user read takes every group from one `getent group` listing and cuts it with the shell. It
 * must answer as a lookup per name would, including for directories that list only part of their
 * groups. `getent` here is a stand-in on PATH serving passwd and group tables from files: the
 * listing (`getent group`) and the lookups by name or number can be made to disagree, as LDAP's do.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkScript, parseUserCheck, userSchema } from '../../src/steps/user/user.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'hostsmith-user-read-'));
  writeFileSync(
    join(dir, 'getent'),
    [
      '#!/bin/sh',
      // Counts every call: the read must not look up a name its listing already holds.
      'echo "$*" >> "$FAKE/calls"',
      'db=$1; key=$2',
      'if [ -z "$key" ]; then cat "$FAKE/$db.list"; exit 0; fi',
      'case $key in *[!0-9]*) f=1;; *) f=3;; esac',
      'awk -F: -v k="$key" -v f=$f \'$f==k{print;found=1;exit} END{exit !found}\' "$FAKE/$db" || exit 2',
    ].join('\n'),
  );
  chmodSync(join(dir, 'getent'), 0o755);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs the read for `name` against these tables; the whole group table is listed unless `listed` says what. */
function read(o: { name: string; groups?: string[]; passwd: string[]; group: string[]; listed?: string[] }) {
  writeFileSync(join(dir, 'passwd'), `${o.passwd.join('\n')}\n`);
  writeFileSync(join(dir, 'group'), `${o.group.join('\n')}\n`);
  writeFileSync(join(dir, 'group.list'), `${(o.listed ?? o.group).join('\n')}\n`);
  writeFileSync(join(dir, 'calls'), '');
  const p = userSchema.parse({ name: o.name, home: '/nonexistent/hostsmith', ...(o.groups ? { groups: o.groups } : {}) });
  const out = execFileSync('/bin/sh', ['-c', checkScript(p)], { encoding: 'utf8', env: { ...process.env, FAKE: dir, PATH: `${dir}:${process.env.PATH}` } });
  const calls = execFileSync('cat', [join(dir, 'calls')], { encoding: 'utf8' })
    .trim()
    .split('\n');
  return { state: parseUserCheck(out, p), calls };
}

const PASSWD = ['root:x:0:0:root:/root:/bin/bash', 'app:x:1001:1001:App:/srv/app:/bin/sh', 'svc:x:1002:2000::/srv/svc:/bin/sh'];
const GROUP = ['root:x:0:', 'adm:x:4:app', 'www-data:x:33:x,app,y', 'apple:x:40:apples,xapp,app2', 'bad', 'bad2:x', 'app:x:1001:', 'staff:x:50:app'];

describe('user read: one group listing, cut by the shell', () => {
  it('finds the primary group, the groups naming the user, its own group and the missing ones, with two lookups in all', () => {
    const { state, calls } = read({ name: 'app', groups: ['www-data', 'staff', 'nothere'], passwd: PASSWD, group: GROUP });
    expect(state.primaryGroup).toBe('app');
    expect(state.memberOf).toEqual(['adm', 'www-data', 'staff']);
    expect(state.sameNameGroup).toBe(true);
    expect(state.missingGroups).toEqual(['nothere']);
    expect(state.user).toMatchObject({ uid: 1001, gid: 1001, home: '/srv/app' });
    // passwd, the listing, and the one name it lacks.
    expect(calls).toEqual(['passwd app', 'group', 'group nothere']);
  });

  it('looks up on its own what a partial listing lacks: the primary group, its own group, a wanted group', () => {
    const group = [...GROUP, 'svcgrp:x:2000:', 'svc:x:2001:', 'ldaponly:x:3000:svc'];
    const { state } = read({ name: 'svc', groups: ['ldaponly', 'nothere'], passwd: PASSWD, group, listed: GROUP });
    expect(state.primaryGroup).toBe('svcgrp');
    expect(state.sameNameGroup).toBe(true);
    expect(state.missingGroups).toEqual(['nothere']);
    // Membership comes from the listing alone, as it always did.
    expect(state.memberOf).toEqual([]);
  });

  it('an absent user has no primary group, and its own group only if one exists', () => {
    const none = read({ name: 'ghost', passwd: PASSWD, group: GROUP });
    expect(none.state).toMatchObject({ user: null, primaryGroup: null, sameNameGroup: false, memberOf: [] });
    const own = read({ name: 'ghost', passwd: PASSWD, group: [...GROUP, 'ghost:x:77:'] });
    expect(own.state.sameNameGroup).toBe(true);
  });

  it('the first group with the primary number wins, as a lookup by number does', () => {
    const { state } = read({ name: 'app', passwd: PASSWD, group: ['first:x:1001:', 'app:x:1001:'] });
    expect(state.primaryGroup).toBe('first');
    expect(state.sameNameGroup).toBe(true);
  });
});
