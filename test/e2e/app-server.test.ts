/**
 * recipes/app-server.yml, as shipped, on a booted systemd host with a network of its own (its
 * firewall is its own): applied, applied again with nothing to do, and undone to zero residue.
 * Everything is checked with plain ssh and the overlay, never through hostsmith.
 *
 * The host has no route out (apt reaches only the mirror, through the harness's proxy), so the
 * recipe's apt repository is served from this machine, as another repository would be: a signed
 * repository (a throwaway key made here with gpg, the Release signed into InRelease) on the
 * machine's end of the host's veth pair, given to the recipe with its `repo_uri`/`repo_key` vars.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Sandbox, SandboxHost } from '../hosts/hosts.js';
import { residue, snapshotHost, type HostSnapshot } from '../hosts/residue.js';
import { sshOk, sshRun } from '../hosts/ssh.js';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { ROOT, hostsmith, sandboxArgs, stepEvents, type CliResult } from './cli.js';

const said = (r: CliResult) => `exit ${r.code}\n${r.stdout}\n${r.stderr}`.slice(-5000);

/** A signed apt repository with one empty component, in `dir`; returns its armored public key. */
function makeRepository(dir: string): string {
  const gnupg = mkdtempSync(join(tmpdir(), 'hostsmith-gpg-'));
  const gpg = (args: string[], input?: string) => {
    const r = spawnSync('gpg', ['--homedir', gnupg, '--batch', '--yes', '--pinentry-mode', 'loopback', '--passphrase', '', ...args], { encoding: 'utf8', input });
    if (r.status !== 0) throw new Error(`gpg ${args.join(' ')} failed: ${r.stderr}`);
    return r.stdout;
  };
  try {
    gpg(['--quick-gen-key', 'hostsmith test repository <repo@example.invalid>', 'ed25519', 'sign', 'never']);
    const packages = join(dir, 'dists/stable/main/binary-amd64/Packages');
    mkdirSync(join(packages, '..'), { recursive: true });
    writeFileSync(packages, '');
    const sha = createHash('sha256').update('').digest('hex');
    const release = [
      'Origin: hostsmith-test',
      'Label: hostsmith-test',
      'Suite: stable',
      'Codename: stable',
      `Date: ${new Date().toUTCString()}`,
      'Architectures: amd64',
      'Components: main',
      'SHA256:',
      ` ${sha} 0 main/binary-amd64/Packages`,
      '',
    ].join('\n');
    writeFileSync(join(dir, 'dists/stable/Release'), release);
    gpg(['--clearsign', '--output', join(dir, 'dists/stable/InRelease'), join(dir, 'dists/stable/Release')]);
    return gpg(['--armor', '--export']);
  } finally {
    rmSync(gnupg, { recursive: true, force: true });
  }
}

function serve(dir: string, address: string): Promise<Server> {
  const server = createServer((req, res) => {
    const path = join(dir, decodeURIComponent((req.url ?? '/').split('?')[0]!));
    if (!path.startsWith(dir)) return void res.writeHead(403).end();
    try {
      const body = readFileSync(path);
      res.writeHead(200, { 'content-length': body.length }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  return new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(0, address, () => ok(server));
  });
}

/** What the overlay cannot show: units, the live sysctl, the firewall. */
async function liveState(sb: Sandbox, h: SandboxHost): Promise<string> {
  return sshOk(
    sb,
    h,
    [
      'for u in app.service app-cleanup.timer; do printf "%s %s %s\\n" "$u" "$(systemctl is-active $u)" "$(systemctl is-enabled $u 2>/dev/null || echo none)"; done',
      'sysctl -n net.core.somaxconn',
      'nft list tables',
    ].join('; '),
  );
}

describeHosts(
  'recipes/app-server.yml on a systemd host',
  () => {
    const sandbox = useSandbox(1, { kind: 'systemd', net: 'private' });
    const dirs: string[] = [];
    const tmp = (prefix: string) => {
      const d = mkdtempSync(join(tmpdir(), prefix));
      dirs.push(d);
      return d;
    };
    let server: Server | undefined;
    let recipeDir: string;
    let stateDir: string;
    let repoUri: string;
    let before: HostSnapshot;
    let liveBefore: string;
    let firstRun = '';
    const host = () => sandbox().hosts[0]!;
    const run = (args: string[]) =>
      hostsmith([
        ...args,
        join(recipeDir, 'recipes/app-server.yml'),
        '--hosts',
        host().name,
        '--var',
        `repo_uri=${repoUri}`,
        '--var',
        'repo_suite=stable',
        '--var',
        'repo_key=test-repo.asc',
        ...sandboxArgs(sandbox(), stateDir),
        '--json',
      ]);

    beforeAll(async () => {
      const repo = tmp('hostsmith-repo-');
      const key = makeRepository(repo);
      const machineEnd = host().address.replace(/\.2$/, '.1');
      server = await serve(repo, machineEnd);
      const port = (server.address() as { port: number }).port;
      repoUri = `http://${machineEnd}:${port}/`;
      // The recipe as shipped, beside the project's templates, with this repository's key added.
      recipeDir = tmp('hostsmith-app-server-');
      cpSync(join(ROOT, 'recipes'), join(recipeDir, 'recipes'), { recursive: true });
      cpSync(join(ROOT, 'templates'), join(recipeDir, 'templates'), { recursive: true });
      writeFileSync(join(recipeDir, 'recipes/files/test-repo.asc'), key);
      stateDir = tmp('hostsmith-state-');
      before = await snapshotHost(sandbox(), host());
      liveBefore = await liveState(sandbox(), host());
    });
    afterAll(async () => {
      await new Promise((r) => (server ? server.close(r) : r(undefined)));
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
    });

    it('sets up the whole server', async () => {
      const r = await run(['apply', '--yes']);
      expect(r.code, said(r)).toBe(0);
      firstRun = r.events.find((e) => e.event === 'run-started')!.runId as string;
      const sb = sandbox();
      const h = host();
      expect(await liveState(sb, h)).toBe('app.service active enabled\napp-cleanup.timer active enabled\n1024\ntable inet app_server\n');
      // the app runs from the tarball as its user and wrote its state where systemd made room
      expect(await sshOk(sb, h, 'cat /opt/app/VERSION; stat -c %U /proc/$(systemctl show -p MainPID --value app.service); sleep 0.5; cut -d" " -f1-3 /var/lib/app/status')).toBe(
        'demo app 1.0.0\napp\napp 1.0.0 started\n',
      );
      expect(await sshOk(sb, h, 'systemctl list-timers app-cleanup.timer --no-legend | grep -c app-cleanup.service')).toBe('1\n');
      // the repository is apt's: its lists were fetched with its key
      expect(await sshOk(sb, h, "grep -h '^URIs:\\|^Signed-By:' /etc/apt/sources.list.d/extra.sources | cut -d' ' -f1")).toMatch(/^URIs:\nSigned-By:\n$/);
      expect((await sshRun(sb, h, `ls /var/lib/apt/lists/ | grep -q '_dists_stable_InRelease$'`)).code).toBe(0);
      expect(await sshOk(sb, h, 'sysctl -n net.core.somaxconn; cat /etc/sysctl.d/99-hostsmith-net.core.somaxconn.conf')).toBe('1024\nnet.core.somaxconn = 1024\n');
      expect(await sshOk(sb, h, 'cut -d" " -f3 /home/ops/.ssh/authorized_keys; id -nG ops')).toBe('alice@ops\nbob@ops\nops sudo\n');
      // the firewall lets in ssh (this very check) and the app's port, and drops the rest
      const rules = await sshOk(sb, h, 'nft list table inet app_server');
      expect(rules).toContain('policy drop;');
      expect(rules).toMatch(/tcp dport \{ 22, 8080 \} accept/);
    });

    it('changes nothing the second time', async () => {
      const r = await run(['apply', '--yes']);
      expect(r.code, said(r)).toBe(0);
      const changed = stepEvents(r).filter((e) => e.status === 'changed');
      expect(
        changed.map((e) => e.step),
        said(r),
      ).toEqual([]);
    });

    it('is undone to the host it found, files and live state', async () => {
      expect(firstRun).not.toBe('');
      const r = await hostsmith(['undo', firstRun, '--yes', '--json', '--state-dir', stateDir]);
      expect(r.code, said(r)).toBe(0);
      expect(await liveState(sandbox(), host())).toBe(liveBefore);
      // What the app wrote while it ran is the app's data, not a change hostsmith made: systemd
      // made /var/lib/app for it (StateDirectory=), and undo leaves it, as it would a database's
      // files. It is that and nothing else.
      expect(await sshOk(sandbox(), host(), 'ls /var/lib/app')).toBe('heartbeat\nstatus\n');
      expect(await residue(sandbox(), host(), before, { ignore: [/^\/var\/lib\/app(\/|$)/] })).toEqual([]);
      expect((await sshRun(sandbox(), host(), 'ls /var/lib/apt/lists/ | grep -q _dists_stable_')).code).not.toBe(0);
    });
  },
  { kind: 'systemd' },
);
