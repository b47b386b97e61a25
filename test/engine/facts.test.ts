/**
 * The facts read the host without starting a process where the kernel or sshd already says it:
 * they must still say exactly what the commands they replace print.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FACTS_SCRIPT, gatherFacts, parseFacts, sameFacts } from '../../src/engine/facts.js';
import { FactsCache } from '../../src/engine/facts-cache.js';
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

describe('facts kept on the controller', () => {
  const facts = { os: { id: 'debian', version_id: '12', name: 'Debian GNU/Linux 12 (bookworm)' }, arch: 'x86_64', hostname: 'web1', user: 'root', home: '/root', pkg: 'apt', init: 'systemd' };

  it('are read back as written, per host key, and only with the shape facts have', () => {
    const dir = mkdtempSync(join(tmpdir(), 'hostsmith-facts-'));
    try {
      const cache = new FactsCache(join(dir, 'state'));
      expect(cache.read('web1')).toBeUndefined();
      cache.write('web1', facts);
      expect(cache.read('web1')).toEqual(facts);
      expect(cache.read('web2')).toBeUndefined();
      const [file] = readdirSync(join(dir, 'state', 'facts'));
      expect(statSync(join(dir, 'state', 'facts', file!)).mode & 0o777).toBe(0o600);
      // Anything else in the file (a hand edit, a cut write) is as good as no file.
      for (const bad of ['{"os":{}}', 'not json', JSON.stringify({ ...facts, user: 7 }), JSON.stringify({ ...facts, os: { id: 'debian' } })]) {
        writeFileSync(join(dir, 'state', 'facts', file!), bad);
        expect(cache.read('web1'), bad).toBeUndefined();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a state dir that cannot be written costs nothing but the round trip', () => {
    const dir = mkdtempSync(join(tmpdir(), 'hostsmith-facts-'));
    try {
      // A file where the state dir would be: no folder can be made under it.
      writeFileSync(join(dir, 'state'), 'not a folder\n');
      const cache = new FactsCache(join(dir, 'state'));
      expect(() => cache.write('web1', facts)).not.toThrow();
      expect(cache.read('web1')).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the same facts compare equal; any field moved does not', () => {
    expect(sameFacts(facts, JSON.parse(JSON.stringify(facts)))).toBe(true);
    expect(sameFacts(facts, { ...facts, init: 'sysvinit' })).toBe(false);
    expect(sameFacts(facts, { ...facts, os: { ...facts.os, version_id: '13' } })).toBe(false);
  });
});
