/**
 * The facts read the host without starting a process where the kernel or sshd already says it:
 * they must still say exactly what the commands they replace print.
 */
import { execFileSync } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { FACTS_SCRIPT, gatherFacts, parseFacts } from '../../src/engine/facts.js';
import { LocalTransport } from '../../src/transport/local.js';

const sh = (cmd: string, env: NodeJS.ProcessEnv = process.env): string => execFileSync('/bin/sh', ['-c', cmd], { encoding: 'utf8', env }).trim();

describe('facts', () => {
  const saved = { LOGNAME: process.env.LOGNAME, USER: process.env.USER };
  afterEach(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });

  it('name the node, machine and user as uname and id do', async () => {
    const f = await gatherFacts(new LocalTransport());
    expect(f.hostname).toBe(sh('uname -n'));
    expect(f.arch).toBe(sh('uname -m'));
    expect(f.user).toBe(sh('id -un'));
  });

  it('the local transport names the account it runs as, whatever LOGNAME it inherited (su keeps the caller’s)', async () => {
    process.env.LOGNAME = 'someone-else';
    process.env.USER = 'someone-else';
    expect((await gatherFacts(new LocalTransport())).user).toBe(sh('id -un'));
  });

  it('fall back to uname and id where the kernel files or LOGNAME are missing, with the same answers', () => {
    const env = { ...process.env };
    delete env.LOGNAME;
    const bare = FACTS_SCRIPT.replaceAll('/proc/sys/kernel/', '/nonexistent/hostsmith-test/');
    expect(bare).not.toBe(FACTS_SCRIPT);
    const out = execFileSync('/bin/sh', ['-c', bare], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    const f = parseFacts(out);
    expect(f.hostname).toBe(sh('uname -n'));
    expect(f.arch).toBe(sh('uname -m'));
    expect(f.user).toBe(sh('id -un'));
  });

  it('start no process on a Linux host that has the kernel files and a login name', () => {
    // With no PATH to find a program on, only the shell's builtins can answer.
    const out = execFileSync('/bin/sh', ['-c', FACTS_SCRIPT], { env: { PATH: '/nonexistent', LOGNAME: sh('id -un') }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    const f = parseFacts(out);
    expect(f.hostname).toBe(sh('uname -n'));
    expect(f.arch).toBe(sh('uname -m'));
    expect(f.user).toBe(sh('id -un'));
  });
});
