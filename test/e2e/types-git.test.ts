/**
 * `git` on a real host. Each sandbox starts without git (the Debian rootfs is minbase): setup
 * installs it with apt and makes a bare repository owned by root, /srv/app.git, with main at two
 * commits, an annotated tag v1 on the first and a light tag v2 on the second. nosudo is told (in
 * its own git config, as any user reading another user's repository must be) that it may read
 * /srv/app.git: git refuses a repository another user owns otherwise.
 *
 * Beyond the battery: a host without git, a clone moved from one tag to another and put back by
 * undo, a clone with local modifications left alone without force (and with force, brought back by
 * undo), and dest (or its parent) planted as a link by a hostile local user.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, expect, it } from 'vitest';
import type { Sandbox, SandboxHost } from '../hosts/hosts.js';
import { sshOk, sshRun } from '../hosts/ssh.js';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { fixture, hostsmith, sandboxArgs, stepEvents, type CliResult } from './cli.js';
import { stepBattery } from './step-battery.js';

const REPO_SETUP = [
  'set -e',
  'export DEBIAN_FRONTEND=noninteractive',
  'command -v git >/dev/null || apt-get install -y -qq git >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq git >/dev/null; }',
  'rm -rf /srv/app.git /root/hs-src',
  'git init -q --bare -b main /srv/app.git',
  'git init -q -b main /root/hs-src && cd /root/hs-src',
  'git config user.email t@example.com && git config user.name t',
  'echo one > app.conf && git add . && git commit -qm first && git tag -a v1 -m v1',
  "echo two > app.conf && echo 'read me' > README && git add . && git commit -qm second && git tag v2",
  'git push -q /srv/app.git main v1 v2',
  'cd / && rm -rf /root/hs-src',
  'sudo -H -u nosudo git config --global --add safe.directory /srv/app.git',
  'git -C /srv/app.git rev-parse v1^{commit} v2',
].join('\n');

/** git installed and /srv/app.git made: the two commits' ids. */
async function setupRepo(sb: Sandbox, h: SandboxHost): Promise<{ c1: string; c2: string }> {
  const [c1, c2] = (await sshOk(sb, h, REPO_SETUP)).trim().split('\n');
  return { c1: c1!, c2: c2! };
}

stepBattery('git', {
  steps: `  - name: Clone app
    git: { repo: /srv/app.git, dest: /opt/hs-app, version: v1 }
  - name: Clone for nosudo
    git: { repo: /srv/app.git, dest: /srv/hs-www/app, owner: nosudo, group: nosudo, depth: 1 }
`,
  async setup(sb, h) {
    await setupRepo(sb, h);
  },
  async verify(sb, h) {
    const v1 = (await sshOk(sb, h, 'git -C /srv/app.git rev-parse v1^{commit}')).trim();
    const main = (await sshOk(sb, h, 'git -C /srv/app.git rev-parse main')).trim();
    expect(await sshOk(sb, h, 'cd /opt/hs-app && git rev-parse HEAD && (git symbolic-ref -q HEAD || echo detached) && cat app.conf && git status --porcelain && stat -c %U .')).toBe(
      `${v1}\ndetached\none\nroot\n`,
    );
    expect(
      await sshOk(sb, h, 'cd /srv/hs-www/app && git rev-parse HEAD && git symbolic-ref HEAD && cat app.conf && find . ! -user nosudo && stat -c %U:%G /srv/hs-www', {
        user: 'nosudo',
      }),
    ).toBe(`${main}\nrefs/heads/main\ntwo\nroot:root\n`);
    expect((await sshOk(sb, h, 'find /srv/hs-www/app ! -group nosudo | wc -l')).trim()).toBe('0');
  },
});

describeHosts('git: what the battery does not cover', () => {
  const sandbox = useSandbox(1);
  const temps: string[] = [];
  const host = () => sandbox().hosts[0]!;
  const root = (cmd: string) => sshOk(sandbox(), host(), cmd);
  const said = (r: CliResult) => `exit ${r.code}\n${r.stdout.slice(-3000)}\n${r.stderr.slice(-2000)}`;
  let ids: Promise<{ c1: string; c2: string }> | undefined;
  const ready = () => (ids ??= setupRepo(sandbox(), host()));
  const stateDir = () => {
    const d = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
    temps.push(d);
    return d;
  };
  const run = (cmd: 'plan' | 'apply', git: string, s = stateDir()): Promise<CliResult> => {
    const dir = fixture({ 'r.yml': `name: git-edge\nsteps:\n  - name: App\n    git: ${git}\n` });
    temps.push(dir);
    return hostsmith([cmd, join(dir, 'r.yml'), ...(cmd === 'apply' ? ['--yes'] : []), '--hosts', host().name, '--json', ...sandboxArgs(sandbox(), s)]);
  };
  afterEach(() => root('rm -rf /srv/moved /tmp/hs-gitlink /tmp/hs-gitdir'));
  afterAll(() => temps.forEach((d) => rmSync(d, { recursive: true, force: true })));

  it('a host without git: the plan says to install it first, naming the host', async () => {
    expect((await sshRun(sandbox(), host(), 'command -v git')).code).not.toBe(0);
    const r = await run('plan', '{ repo: https://example.com/app.git, dest: /srv/moved }');
    expect(r.code, said(r)).toBe(1);
    expect(r.stdout + r.stderr).toContain(`git is not installed on ${host().name}; add a package step for git before this step`);
  });

  it('an existing clone moves from tag v1 to v2 with the commits shown, and undo puts it back on its branch at v1', async () => {
    const { c1, c2 } = await ready();
    await root('git clone -q /srv/app.git /srv/moved && cd /srv/moved && git checkout -q -b stay v1');
    const s = stateDir();
    const r = await run('apply', '{ repo: /srv/app.git, dest: /srv/moved, version: v2 }', s);
    expect(r.code, said(r)).toBe(0);
    const [e] = stepEvents(r);
    expect(e?.summary).toBe(`move /srv/moved from ${c1.slice(0, 7)} (branch stay) to ${c2.slice(0, 7)} (tag v2); 1 commit forward, 0 back`);
    expect(e?.diff).toContain(`+${c2.slice(0, 7)} second`);
    expect(await root('cd /srv/moved && git rev-parse HEAD && (git symbolic-ref -q HEAD || echo detached) && cat app.conf')).toBe(`${c2}\ndetached\ntwo\n`);
    const again = await run('apply', '{ repo: /srv/app.git, dest: /srv/moved, version: v2 }');
    expect(stepEvents(again).map((x) => x.status)).toEqual(['unchanged']);

    const runId = r.events.find((x) => x.event === 'run-started')!.runId as string;
    const undo = await hostsmith(['undo', runId, '--yes', '--json', '--state-dir', s]);
    expect(undo.code, said(undo)).toBe(0);
    expect(await root('cd /srv/moved && git rev-parse HEAD stay && git symbolic-ref HEAD && cat app.conf && git status --porcelain')).toBe(`${c1}\n${c1}\nrefs/heads/stay\none\n`);
  });

  it('local modifications without force: the step fails naming the files, and nothing changes', async () => {
    const { c1 } = await ready();
    await root("git clone -q /srv/app.git /srv/moved && cd /srv/moved && git checkout -q --detach v1 && echo mine > app.conf && echo 'also mine' > README.local");
    const before = await root('cd /srv/moved && find . -printf "%p %s %T@\\n" | sort | md5sum');
    const plan = await run('plan', '{ repo: /srv/app.git, dest: /srv/moved, version: v2 }');
    expect(plan.code, said(plan)).toBe(1);
    const r = await run('apply', '{ repo: /srv/app.git, dest: /srv/moved, version: v2 }');
    expect(r.code, said(r)).toBe(1);
    expect(r.stdout + r.stderr).toContain('/srv/moved has local modifications in 1 file: app.conf; nothing was changed: commit or discard them on the host, or set force: true to throw them away');
    expect(await root('cd /srv/moved && find . -printf "%p %s %T@\\n" | sort | md5sum')).toBe(before);
    expect(await root('cd /srv/moved && git rev-parse HEAD && cat app.conf')).toBe(`${c1}\nmine\n`);
  });

  it('force: the modifications it throws away come back with undo, on the commit they were made on', async () => {
    const { c1, c2 } = await ready();
    await root('git clone -q /srv/app.git /srv/moved && cd /srv/moved && git checkout -q --detach v1 && echo mine > app.conf');
    const s = stateDir();
    const r = await run('apply', '{ repo: /srv/app.git, dest: /srv/moved, version: v2, force: true }', s);
    expect(r.code, said(r)).toBe(0);
    expect(stepEvents(r)[0]?.summary).toMatch(/discarding local modifications in app.conf \(force\)$/);
    expect(await root('cd /srv/moved && git rev-parse HEAD && cat app.conf && git status --porcelain && git for-each-ref --count=1 refs/hostsmith | wc -l')).toBe(`${c2}\ntwo\n1\n`);
    const runId = r.events.find((x) => x.event === 'run-started')!.runId as string;
    const undo = await hostsmith(['undo', runId, '--yes', '--json', '--state-dir', s]);
    expect(undo.code, said(undo)).toBe(0);
    expect(await root('cd /srv/moved && git rev-parse HEAD && (git symbolic-ref -q HEAD || echo detached) && cat app.conf && git status --porcelain && git for-each-ref refs/hostsmith')).toBe(
      `${c1}\ndetached\nmine\n M app.conf\n`,
    );
  });

  it('dest planted as a link to /etc by a local user: refused naming it, /etc untouched', async () => {
    await ready();
    await sshOk(sandbox(), host(), 'ln -s /etc /tmp/hs-gitlink', { user: 'nosudo' });
    const etc = () => root('ls -la --time-style=+ /etc | md5sum; test ! -e /etc/.git && echo clean');
    const before = await etc();
    const r = await run('apply', '{ repo: /srv/app.git, dest: /tmp/hs-gitlink }');
    expect(r.code, said(r)).toBe(1);
    expect(r.stdout + r.stderr).toMatch(/refusing \/tmp\/hs-gitlink: it is a symbolic link \(owned by uid \d+\) that a user other than root could have planted or swapped/);
    expect(await etc()).toBe(before);
  });

  it("dest's parent planted as a link: refused naming the parent, nothing made where it points", async () => {
    await ready();
    await sshOk(sandbox(), host(), 'mkdir /tmp/hs-gitdir && ln -s /root /tmp/hs-gitdir/sub', { user: 'nosudo' });
    const r = await run('apply', '{ repo: /srv/app.git, dest: /tmp/hs-gitdir/sub/app }');
    expect(r.code, said(r)).toBe(1);
    expect(r.stdout + r.stderr).toMatch(/refusing \/tmp\/hs-gitdir\/sub: it is a symbolic link/);
    expect((await sshRun(sandbox(), host(), 'test -e /root/app')).code).not.toBe(0);
  });
});
