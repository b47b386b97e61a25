/**
 * Entering a folder without being turned by a link (shell/safe-path.ts), run through /bin/sh as
 * on a host: a folder swapped for a link between the look at it and the step into it is caught
 * by what the step landed in. The swap is made at that very moment by a `cd` function that the
 * shell calls in place of its builtin.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SAFE_PATH_SH } from '../../src/shell/safe-path.js';

const root = mkdtempSync(join(tmpdir(), 'hostsmith-safe-path-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function sh(script: string): { code: number; out: string; err: string } {
  try {
    const out = execFileSync('sh', ['-c', script], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    return { code: 0, out, err: '' };
  } catch (e) {
    const x = e as { status: number; stdout: string; stderr: string };
    return { code: x.status, out: x.stdout, err: x.stderr };
  }
}

describe('hs_cd: the folder it stands in is the one it meant to enter', () => {
  mkdirSync(join(root, 'app/conf'), { recursive: true });
  mkdirSync(join(root, 'elsewhere/conf'), { recursive: true });
  writeFileSync(join(root, 'elsewhere/conf/secret'), 'not for hostsmith\n');

  it('enters a plain folder and stands in it', () => {
    const r = sh(`${SAFE_PATH_SH}\nhs_cd '${root}/app/conf' && pwd -P`);
    expect(r).toMatchObject({ code: 0, out: `${root}/app/conf\n` });
  });

  it("follows root's link in a folder only root changes", () => {
    symlinkSync('app', join(root, 'via'));
    const r = sh(`${SAFE_PATH_SH}\nhs_cd '${root}/via/conf' && pwd -P`);
    expect(r).toMatchObject({ code: 0, out: `${root}/app/conf\n` });
  });

  it('refuses a folder swapped for a link after it was looked at, before the step into it', () => {
    mkdirSync(join(root, 'race/conf'), { recursive: true });
    // Runs in place of the builtin: swaps `race` for a link to `elsewhere` right before entering it.
    const swap = `cd() { if [ "$3" = ./race ]; then mv race race.old && ln -s elsewhere race; fi; command cd "$@"; }`;
    const r = sh(`${SAFE_PATH_SH}\n${swap}\nhs_cd '${root}/race/conf' && pwd -P`);
    expect(r.code).toBe(77);
    expect(r.out).toBe('');
    expect(r.err).toBe(`hostsmith: refusing ${root}/race: it was swapped for a symbolic link (to ${root}/elsewhere) while hostsmith used it\n`);
  });
});
