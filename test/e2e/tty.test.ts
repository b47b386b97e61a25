/**
 * On a terminal, apply asks for prompt vars, shows the plan and asks before changing anything,
 * and the passphrase of an --identity key when no agent holds it.
 * A real pseudo-terminal comes from script(1); answers are typed when the prompts appear.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { sshOk, sshRun } from '../hosts/ssh.js';
import { journalText, onTerminal, sandboxArgs } from './cli.js';

describeHosts('apply on a terminal', () => {
  const sandbox = useSandbox(1);

  it('asks for prompt vars, shows the plan and applies only after a yes', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const state = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
    const args = ['apply', 'recipes/motd.yml', '--hosts', h.name, ...sandboxArgs(sb, state)];
    const no = await onTerminal(args, [
      [/First line of the message of the day/, 'Ahoy\r'],
      [/Apply these 5 change\(s\)\?/, 'n\r'],
    ]);
    expect(no.code, no.screen.slice(-3000)).toBe(0);
    expect(no.screen).toContain('+Ahoy to h1');
    expect(no.screen).toContain('Not applied; nothing was changed.');
    expect((await sshRun(sb, h, 'test -e /opt/hostsmith-demo')).code).toBe(1);

    const yes = await onTerminal(args, [
      [/First line of the message of the day/, 'Ahoy\r'],
      [/Apply these 5 change\(s\)\?/, 'y\r'],
    ]);
    expect(yes.code, yes.screen.slice(-3000)).toBe(0);
    expect(yes.screen).toMatch(/Done \(run \S+\)/);
    expect((await sshRun(sb, h, 'head -1 /etc/motd')).stdout).toBe('Ahoy to h1 (Debian GNU/Linux 12 (bookworm)).\n');
  });

  it('Ctrl-C at the confirmation stops with 130 and changes nothing', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    await sshOk(sb, h, 'rm -rf /opt/hostsmith-demo');
    const state = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
    const r = await onTerminal(['apply', 'recipes/motd.yml', '--hosts', h.name, '--var', 'greeting=Hi', ...sandboxArgs(sb, state)], [[/Apply these \d+ change\(s\)\?/, '\x03']]);
    expect(r.code, r.screen.slice(-2000)).toBe(130);
    expect(r.screen).toContain('stopped at the prompt; nothing was changed');
    expect((await sshRun(sb, h, 'test -e /opt/hostsmith-demo')).code).toBe(1);
  });

  it('--identity with a passphrase and no agent: asked for, a wrong one refused, the right one logs in', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const dir = mkdtempSync(join(tmpdir(), 'hostsmith-key-'));
    const key = join(dir, 'locked');
    // Random, so that finding it anywhere (screen, journal, plan file, ps) can only be a leak.
    const passphrase = `pp-${randomBytes(6).toString('hex')}`;
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', passphrase, '-C', 'locked@test', '-f', key]);
    await sshOk(sb, h, 'cat >> /root/.ssh/authorized_keys', { input: readFileSync(`${key}.pub`, 'utf8') });
    const state = join(dir, 'state');
    const planFile = join(dir, 'plan.json');
    let ps = '';
    const poll = setInterval(() => {
      try {
        ps += execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' });
      } catch {
        /* read again at the next tick */
      }
    }, 150);
    let r: { code: number; screen: string };
    try {
      // --identity overrides the inventory's key, and there is no agent: only the locked key can log in.
      r = await onTerminal(
        ['plan', 'recipes/motd.yml', '--hosts', h.name, '--var', 'greeting=Hi', '--identity', key, '--out', planFile, ...sandboxArgs(sb, state)],
        [
          [/Passphrase for .*locked/, 'wrong-one\r'],
          // A refused answer left in the field would go in front of this one, and be refused again.
          [/wrong passphrase for/, `${passphrase}\r`],
        ],
        { env: { SSH_AUTH_SOCK: '' }, timeoutMs: 40_000 },
      );
    } finally {
      clearInterval(poll);
    }
    // Exit 0 within the time: the second answer logged in (no third prompt waited for an answer).
    expect(r.code, r.screen.slice(-3000)).toBe(0);
    expect(r.screen).toContain(`wrong passphrase for ${key}`);
    expect(r.screen).toContain('+Hi to h1');
    for (const [what, text] of [
      ['screen', r.screen],
      ['journal', journalText(state)],
      ['plan file', readFileSync(planFile, 'utf8')],
      ['process list', ps],
    ] as const) {
      expect(text.includes(passphrase), `${what} shows the passphrase`).toBe(false);
    }
    expect(ps).toContain('--identity');
  });
});
