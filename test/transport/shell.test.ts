import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { quote, wrapCommand } from '../../src/transport/shell.js';

const sh = (cmd: string) => execFileSync('/bin/sh', ['-c', cmd], { encoding: 'utf8' });

describe('quote', () => {
  it.each([['plain'], ["it's"], ['$HOME `id` "x"'], ['a\nb'], [''], ['--flag'], ['* ?']])('round-trips %j through sh', (s) => {
    expect(sh(`printf %s ${quote(s)}`)).toBe(s);
  });
});

describe('wrapCommand', () => {
  it('runs under sh -c with cwd and env', () => {
    expect(sh(wrapCommand('echo "$GREETING from $(pwd)"', { cwd: '/tmp', env: { GREETING: "it's me" } }))).toBe("it's me from /tmp\n");
  });
  it('adds sudo only when not root', () => {
    expect(wrapCommand('id', { sudo: true, loginUser: 'deploy' })).toMatch(/^sudo -n -- sh -c/);
    expect(wrapCommand('id', { sudo: true, loginUser: 'root' })).toMatch(/^sh -c/);
    expect(wrapCommand('id', { user: 'www', loginUser: 'root' })).toMatch(/^sudo -n -H -u www -- sh -c/);
  });
  it('enforces timeouts on the host with timeout(1)', () => {
    expect(wrapCommand('sleep 9', { timeoutMs: 1500 })).toMatch(/^timeout -k 5 2 sh -c/);
  });
  it('rejects env names a shell would misread', () => {
    expect(() => wrapCommand('x', { env: { 'A-B': '1' } })).toThrow(/invalid environment variable name/);
  });
});
