/**
 * On a terminal, apply asks for prompt vars, shows the plan and asks before changing anything.
 * A real pseudo-terminal comes from script(1); answers are typed when the prompts appear.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { sshOk, sshRun } from '../hosts/ssh.js';
import { ROOT, sandboxArgs } from './cli.js';

function onTerminal(args: string[], answers: Array<[RegExp, string]>): Promise<{ code: number; screen: string }> {
  const cmd = [process.execPath, join(ROOT, 'bin/hostsmith.js'), ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  return new Promise((resolve, reject) => {
    const child = spawn('script', ['-qfec', `stty cols 120 rows 40; ${cmd}`, '/dev/null'], { env: { ...process.env, TERM: 'xterm', NO_COLOR: '1' }, cwd: ROOT });
    let screen = '';
    let next = 0;
    child.stdout.on('data', (d: Buffer) => {
      screen += d.toString();
      while (next < answers.length && answers[next]![0].test(screen)) child.stdin.write(answers[next++]![1]);
    });
    child.on('error', reject);
    const kill = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('close', (code) => {
      clearTimeout(kill);
      resolve({ code: code ?? -1, screen });
    });
  });
}

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
