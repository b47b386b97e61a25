/**
 * `apt_repository` on real hosts, checked with plain ssh, never through hostsmith.
 *
 * The sandbox hosts reach Debian's mirror and nothing else, so Debian's own archive stands in for
 * the third-party repository: bookworm-backports on the mirror the host's sources.list uses (the
 * one its rootfs was debootstrapped from), signed-by the archive keyring the host ships, a binary
 * key (so .gpg). The battery's recipe is written before any host runs, so that key is read from
 * the rootfs the hosts boot from (the overlay's lower layer, the very bytes the host has); verify
 * checks with ssh that it is the host's own file. /etc/apt/keyrings is removed first, so the step
 * makes it and every rollback must take it away again.
 *
 * apt's lists are churn to the residue check (ignored), so `restored` checks them on its own:
 * after every rollback, no list of bookworm-backports is left and apt offers nothing from it.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import type { Sandbox, SandboxHost } from '../hosts/hosts.js';
import { residue, snapshotHost } from '../hosts/residue.js';
import { mirror, rootfsPath } from '../hosts/rootfs.js';
import { sshOk, sshRun } from '../hosts/ssh.js';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { fixture, hostsmith, sandboxArgs, stepEvents } from './cli.js';
import { stepBattery } from './step-battery.js';

const KEYRING = 'usr/share/keyrings/debian-archive-keyring.gpg';
const PREFIX = `${mirror()
  .replace(/^[a-z]+:\/\//, '')
  .replace(/\/+$/, '')
  .replace(/\//g, '_')}_dists_bookworm-backports_`;

const steps = (key: string, extra = '') => `  - name: Backports
    apt_repository:
      name: backports
      uris: ${mirror()}
      suites: bookworm-backports
      components: main
      key: { file: ${key} }
      update_cache: true${extra}
`;

/** No list of the source is left, and apt no longer offers anything from it. */
async function noBackports(sb: Sandbox, h: SandboxHost): Promise<void> {
  expect(await sshOk(sb, h, `ls /var/lib/apt/lists /var/lib/apt/lists/partial | grep -F ${PREFIX} || true`)).toBe('');
  expect(await sshOk(sb, h, 'apt-cache policy | grep -c bookworm-backports || true')).toBe('0\n');
  expect(await sshOk(sb, h, 'ls /etc/apt/sources.list.d; test -e /etc/apt/keyrings && echo keyrings || true')).toBe('');
}

stepBattery('apt_repository', {
  steps: steps('files/debian-archive.gpg'),
  // Read when the battery writes its recipe folder, once the sandbox (and so its rootfs) is up.
  get files() {
    return { 'files/debian-archive.gpg': readFileSync(join(rootfsPath(), KEYRING)) };
  },
  async setup(sb, h) {
    await sshOk(sb, h, 'rmdir /etc/apt/keyrings');
  },
  async verify(sb, h) {
    expect(await sshOk(sb, h, `grep -c ${mirror()} /etc/apt/sources.list`)).toBe('1\n');
    expect(await sshOk(sb, h, 'cat /etc/apt/sources.list.d/backports.sources')).toBe(
      `Types: deb\nURIs: ${mirror()}\nSuites: bookworm-backports\nComponents: main\nSigned-By: /etc/apt/keyrings/backports.gpg\n`,
    );
    expect(
      await sshOk(
        sb,
        h,
        `stat -c '%a %U:%G %n' /etc/apt/keyrings /etc/apt/keyrings/backports.gpg /etc/apt/sources.list.d/backports.sources; cmp /etc/apt/keyrings/backports.gpg /${KEYRING} && echo same`,
      ),
    ).toBe('755 root:root /etc/apt/keyrings\n644 root:root /etc/apt/keyrings/backports.gpg\n644 root:root /etc/apt/sources.list.d/backports.sources\nsame\n');
    // apt knows the source from the restricted update: its origin and its priority (100, not automatic).
    const policy = await sshOk(sb, h, 'apt-cache policy');
    expect(policy).toMatch(/ 100 \S+ bookworm-backports\/main amd64 Packages\n\s+release o=Debian Backports,a=\w+-backports,n=bookworm-backports,l=Debian Backports,c=main/);
    expect(await sshOk(sb, h, `ls /var/lib/apt/lists | grep -c -F ${PREFIX}`)).not.toBe('0\n');
  },
  restored: noBackports,
});

describeHosts('apt_repository: what the battery does not cover', () => {
  const sandbox = useSandbox(1);
  const dirs: string[] = [];
  afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

  it('a key that did not sign the archive: the update fails the step, which leaves no .sources, key or list behind (exit 1)', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    // Trixie's release key is a real OpenPGP key, but bookworm-backports is not signed with it.
    const wrong = Buffer.from(await sshOk(sb, h, 'base64 -w0 /usr/share/keyrings/debian-archive-trixie-stable.gpg'), 'base64');
    expect(wrong.length).toBeGreaterThan(100);
    const before = await snapshotHost(sb, h);
    const dir = fixture({ 'r.yml': `name: wrong-key\nsteps:\n${steps('files/wrong.gpg')}`, 'files/wrong.gpg': wrong });
    const state = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
    dirs.push(dir, state);
    const r = await hostsmith(['apply', join(dir, 'r.yml'), '--yes', '--hosts', h.name, ...sandboxArgs(sb, state), '--json']);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    const ev = stepEvents(r).find((e) => e.step === 'Backports');
    expect(ev, r.stdout + r.stderr).toMatchObject({ status: 'failed' });
    expect(JSON.stringify(ev)).toMatch(/apt-get update of the source backports failed.*(NO_PUBKEY|not signed|signature)/);
    expect(await sshOk(sb, h, 'ls /etc/apt/sources.list.d /etc/apt/keyrings')).toBe('/etc/apt/keyrings:\n\n/etc/apt/sources.list.d:\n');
    await noBackportsLists(sb, h);
    expect(await residue(sb, h, before)).toEqual([]);
  });
});

async function noBackportsLists(sb: Sandbox, h: SandboxHost): Promise<void> {
  expect((await sshRun(sb, h, `ls /var/lib/apt/lists /var/lib/apt/lists/partial | grep -F ${PREFIX}`)).stdout).toBe('');
}
