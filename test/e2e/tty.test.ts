/**
 * On a terminal, apply asks for prompt vars, shows the plan and asks before changing anything.
 * A real pseudo-terminal comes from script(1); answers are typed when the prompts appear.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { sshOk, sshRun } from '../hosts/ssh.js';
import { onTerminal, sandboxArgs } from './cli.js';

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
});
