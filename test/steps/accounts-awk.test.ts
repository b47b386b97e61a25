/**
 * The lockout watchdog restores account entries with MERGE_AWK (no controller on the host); the
 * controller restores them with mergeEntries + dropAddedMembers. Both forms must give the same
 * bytes: checked here on fixed cases and on random account files, with the host's awk (mawk, as
 * Debian installs it).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { MERGE_AWK, dropAddedMembers, mergeEntries, type AccountFile } from '../../src/steps/accounts.js';

const dir = mkdtempSync(join(tmpdir(), 'hostsmith-awk-'));
const FIELDS: Partial<Record<AccountFile, string>> = { group: '4', gshadow: '3 4' };

function viaAwk(file: AccountFile, before: string | null, current: string | null, keys: string[], drop: string[]): string {
  const b = join(dir, 'before');
  const c = join(dir, 'current');
  writeFileSync(b, before ?? '', 'latin1');
  writeFileSync(c, current ?? '', 'latin1');
  const nl = (t: string | null) => (t?.endsWith('\n') ? '1' : '0');
  const r = spawnSync(
    'awk',
    [
      '-v',
      `keys=${keys.join(' ')}`,
      '-v',
      `drop=${drop.join(' ')}`,
      '-v',
      `mf=${FIELDS[file] ?? ''}`,
      '-v',
      `nlb=${nl(before)}`,
      '-v',
      `nlc=${nl(current)}`,
      MERGE_AWK,
      before === null ? '/dev/null' : b,
      current === null ? '/dev/null' : c,
    ],
    {
      env: { ...process.env, LC_ALL: 'C' },
      encoding: 'latin1',
    },
  );
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  return r.stdout;
}

function viaTs(file: AccountFile, before: string | null, current: string | null, keys: string[], drop: string[]): string {
  const FIELDS_TS = FIELDS[file] ? drop : [];
  return dropAddedMembers(file, before ?? '', mergeEntries(before ?? '', current ?? '', keys), FIELDS_TS);
}

describe('MERGE_AWK equals mergeEntries + dropAddedMembers', () => {
  const cases: Array<[string, AccountFile, string | null, string | null, string[], string[]]> = [
    ['added entry dropped', 'passwd', 'root:x:0:0::/root:/bin/sh\n', 'root:x:0:0::/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n', ['bob'], []],
    ['removed entry re-inserted after its old neighbour', 'passwd', 'a:1\nbob:2\nc:3\n', 'a:1\nc:3\n', ['bob'], []],
    ['removed first entry goes first', 'group', 'bob:x:1:\na:x:2:\n', 'a:x:2:\n', ['bob'], []],
    ['changed entry replaced in place', 'shadow', 'a:1\nbob:old\nc:3\n', 'a:1\nbob:new\nc:3\nd:4\n', ['bob'], []],
    ['members added since dropped, others kept', 'group', 'adm:x:4:root\nwd:x:9:\n', 'adm:x:4:root,bob,eve\nwd:x:9:bob\n', [], ['bob']],
    ['gshadow admins and members', 'gshadow', 'adm:!:root:root\n', 'adm:!:root,bob:root,bob\n', [], ['bob']],
    ['no final newline kept', 'passwd', 'a:1\nbob:2', 'a:1', ['bob'], []],
    ['empty result', 'subuid', 'x', 'bob:1:2\n', ['bob'], []],
    ['absent current file', 'subgid', 'bob:100000:65536\n', null, ['bob'], []],
    ['duplicate names and blank lines', 'passwd', 'a:1\n\nbob:2\nbob:3\n', '\na:1\nz:9\n', ['bob'], []],
    ['latin1 bytes pass through', 'passwd', 'a:\xe9\xff:1\n', 'a:\xe9\xff:1\nbob:2\n', ['bob'], []],
  ];
  for (const [name, file, before, current, keys, drop] of cases) {
    it(name, () => {
      expect(viaAwk(file, before, current, keys, drop)).toBe(viaTs(file, before, current, keys, drop));
    });
  }

  it('random account files', () => {
    let seed = 7;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const names = ['root', 'adm', 'bob', 'eve', 'wd', 'cron', 'x.y', 'u_1'];
    const line = (n: string) => `${n}:x:${rnd(50)}:${rnd(3) ? names.filter(() => rnd(3) === 0).join(',') : ''}`;
    for (let i = 0; i < 300; i++) {
      const file: AccountFile = (['passwd', 'group', 'gshadow', 'shadow'] as const)[rnd(4)]!;
      const pick = () => names.filter(() => rnd(2) === 0);
      const before = pick().map(line).join('\n') + (rnd(5) ? '\n' : '');
      const current = pick().map(line).join('\n') + (rnd(5) ? '\n' : '');
      const keys = pick().slice(0, 3);
      const drop = rnd(2) ? pick().slice(0, 2) : [];
      expect(viaAwk(file, before, current, keys, drop), JSON.stringify({ file, before, current, keys, drop })).toBe(viaTs(file, before, current, keys, drop));
    }
  });
});
