/**
 * --identity is checked before any connection: a public key or a passphrase-locked key with no
 * agent is said for what it is (exit 2), not as "authentication failed" from the server. On a
 * terminal the passphrase is asked for instead (its use on a real host: test/e2e/tty.test.ts).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { onTerminal } from '../e2e/cli.js';

const BIN = resolve(import.meta.dirname, '../../bin/hostsmith.js');
const ROOT = resolve(import.meta.dirname, '../..');

describe('--identity', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hostsmith-keys-'));
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'plain')]);
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', 'secret', '-f', join(dir, 'locked')]);
  // 192.0.2.1 (TEST-NET-1) is never reached: the key is refused first.
  const run = (key: string, env: Record<string, string> = {}) =>
    spawnSync(process.execPath, [BIN, 'plan', 'recipes/motd.yml', '--hosts', 'root@192.0.2.1', '--identity', key, '--state-dir', join(dir, 'state')], {
      cwd: ROOT,
      encoding: 'utf8',
      env: { ...process.env, SSH_AUTH_SOCK: '', NO_COLOR: '1', ...env },
      timeout: 30_000,
    });

  it('a public key is named as such, with the private key beside it', () => {
    const r = run(join(dir, 'plain.pub'));
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(`${join(dir, 'plain.pub')} is a public key; give the private key (${join(dir, 'plain')})`);
  });

  it('a key with a passphrase and no agent says so', () => {
    const r = run(join(dir, 'locked'));
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/is encrypted \(it has a passphrase\) and no ssh-agent is running/);
  });

  it('a missing key file', () => {
    const r = run(join(dir, 'nope'));
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('no such key file');
  });

  // On a pty, with no agent: the host is never reached, as every case here stops at the prompt.
  const onPty = (extra: string[], answers: Array<[RegExp, string]>) =>
    onTerminal(['plan', 'recipes/motd.yml', '--hosts', 'root@192.0.2.1', '--var', 'greeting=Hi', '--identity', join(dir, 'locked'), '--state-dir', join(dir, 'state'), ...extra], answers, {
      env: { SSH_AUTH_SOCK: '' },
      timeoutMs: 30_000,
    });

  it('on a terminal the passphrase is asked for; a wrong one is said, and Ctrl-C stops with 130', async () => {
    const r = await onPty(
      [],
      [
        [/Passphrase for .*locked/, 'not-it\r'],
        [/wrong passphrase for/, '\x03'],
      ],
    );
    expect(r.code, r.screen.slice(-2000)).toBe(130);
    expect(r.screen).toContain(`wrong passphrase for ${join(dir, 'locked')}`);
    expect(r.screen).toContain('stopped at the prompt; nothing was changed');
    expect(r.screen).not.toContain('not-it');
  });

  it('with --json on a terminal nothing is asked: exit 2 as without one', async () => {
    const r = await onPty(['--json'], []);
    expect(r.code, r.screen.slice(-2000)).toBe(2);
    expect(r.screen).toMatch(/is encrypted \(it has a passphrase\) and no ssh-agent is running/);
    expect(r.screen).not.toContain('Passphrase for');
  });
});

describe('--identity with an inventory elsewhere', () => {
  it('a relative key is found from where the command runs, not from the inventory folder', async () => {
    const { cliIdentity } = await import('../../src/cli/context.js');
    expect(cliIdentity('keys/deploy', '/home/ops/work')).toBe('/home/ops/work/keys/deploy');
    expect(cliIdentity('/abs/key', '/home/ops/work')).toBe('/abs/key');
    expect(cliIdentity('~/.ssh/id_ed25519', '/home/ops/work')).toBe('~/.ssh/id_ed25519');
    expect(cliIdentity(undefined)).toBeUndefined();
  });
});
