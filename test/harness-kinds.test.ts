/**
 * The sandbox's other kinds of host: a booted systemd (systemd-nspawn), and hosts on a network of
 * their own. Checked from this machine with plain ssh and /proc, never through hostsmith.
 */
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { lookup } from 'node:dns/promises';
import { expect, it } from 'vitest';
import { cgroupRoots } from './hosts/host-files.js';
import { sandboxPidNamespaces, type Sandbox, type SandboxHost } from './hosts/hosts.js';
import { sshOk, sshRun } from './hosts/ssh.js';
import { describeHosts, useSandbox } from './hosts/use-sandbox.js';
import { mountsUnder } from './hosts/util.js';

/** Pids (as seen from here) of every process in the given pid namespaces. */
function processesIn(namespaces: string[]): number[] {
  const wanted = new Set(namespaces);
  return readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .filter((n) => {
      try {
        return wanted.has(readlinkSync(`/proc/${n}/ns/pid`));
      } catch {
        return false;
      }
    })
    .map(Number);
}

/** The cgroup folders the sandbox's systemd hosts live in, on this machine. */
function hostCgroups(): string[] {
  return cgroupRoots().flatMap((r) => {
    const top = `${r}/hostsmith-sandbox`;
    return existsSync(top)
      ? readdirSync(top, { withFileTypes: true })
          .filter((e) => e.isDirectory())
          .map((e) => `${top}/${e.name}`)
      : [];
  });
}

const links = (): string => spawnSync('ip', ['-o', 'link'], { encoding: 'utf8' }).stdout;

async function stopsClean(sb: Sandbox): Promise<void> {
  const namespaces = sandboxPidNamespaces(sb.dir);
  expect(namespaces.length).toBe(sb.hosts.length);
  expect(processesIn(namespaces).length).toBeGreaterThan(0);
  const cgroupsBefore = hostCgroups();
  await sb.stop();
  expect(processesIn(namespaces)).toEqual([]);
  expect(mountsUnder(sb.dir)).toEqual([]);
  expect(existsSync(sb.dir)).toBe(false);
  // no cgroup of theirs outlives them (another test's hosts may still have theirs)
  const left = new Set(hostCgroups());
  expect(cgroupsBefore.filter((c) => left.has(c) && sb.hosts.some((h) => c.endsWith(`/slot${slotOf(h)}`)))).toEqual([]);
}

/** The slot a host was given: the last byte of a shared address, the third of a private one. */
function slotOf(h: SandboxHost): number {
  const parts = h.address.split('.').map(Number);
  return h.address.startsWith('127.') ? parts[3]! : parts[2]!;
}

describeHosts(
  'systemd sandbox hosts',
  () => {
    const sandbox = useSandbox(2, { kind: 'systemd' });

    it('boot a real systemd that runs sshd, each with its own name and machine id', async () => {
      const sb = sandbox();
      const seen = await Promise.all(sb.hosts.map((h) => sshOk(sb, h, 'cat /proc/1/comm; systemctl is-system-running --wait; systemctl is-active ssh.service; hostname; cat /etc/machine-id')));
      sb.hosts.forEach((h, i) => {
        const [init, state, ssh, name] = seen[i]!.split('\n');
        expect({ init, state, ssh, name }).toEqual({ init: 'systemd', state: 'running', ssh: 'active', name: h.name });
      });
      expect(seen[0]!.split('\n')[4]).not.toBe(seen[1]!.split('\n')[4]);
    });

    it('share this machine’s network but may not change its firewall', async () => {
      const sb = sandbox();
      const r = await sshRun(sb, sb.hosts[0]!, 'nft add table inet hostsmith_probe');
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/Operation not permitted/);
    });

    it('come back from a reboot with a new boot id and their files kept', async () => {
      const sb = sandbox();
      const h = sb.hosts[0]!;
      const before = await sshOk(sb, h, 'echo kept > /root/kept; cat /proc/sys/kernel/random/boot_id');
      await sshRun(sb, h, 'systemctl reboot');
      let after = '';
      for (let i = 0; i < 200 && !after; i++) {
        const r = await sshRun(sb, h, 'systemctl is-system-running --wait >/dev/null; cat /proc/sys/kernel/random/boot_id; cat /root/kept');
        if (r.code === 0 && r.stdout.trim() !== before.trim()) after = r.stdout;
        else await new Promise((res) => setTimeout(res, 100));
      }
      const [boot, kept] = after.split('\n');
      expect(boot).toMatch(/^[0-9a-f-]{36}$/);
      expect(boot).not.toBe(before.trim());
      expect(kept).toBe('kept');
      expect(readFileSync(`${h.dir}/sshd.log`, 'utf8')).toContain('rebooting');
    });

    it('stop() leaves no process, mount, cgroup or file behind', async () => {
      await stopsClean(sandbox());
    });
  },
  { kind: 'systemd' },
);

for (const kind of ['plain', 'systemd'] as const) {
  describeHosts(
    `${kind} sandbox hosts on a network of their own`,
    () => {
      const sandbox = useSandbox(1, { kind, net: 'private' });

      it('are reached on their own address over a veth pair, and their firewall is theirs alone', async () => {
        const sb = sandbox();
        const h = sb.hosts[0]!;
        expect(h.address).toMatch(/^10\.231\.\d+\.2$/);
        expect(h.port).toBe(22);
        expect(links()).toContain(`hsv${slotOf(h)}@`);
        const machineRules = spawnSync('nft', ['list', 'ruleset'], { encoding: 'utf8' }).stdout;
        expect(await sshOk(sb, h, 'nft add table inet hostsmith_probe && nft list tables')).toContain('table inet hostsmith_probe');
        // the machine's network namespace is not the host's, and its ruleset did not move
        const hostNet = await sshOk(sb, h, 'readlink /proc/self/ns/net');
        expect(hostNet.trim()).not.toBe(readlinkSync('/proc/self/ns/net'));
        expect(spawnSync('nft', ['list', 'ruleset'], { encoding: 'utf8' }).stdout).toBe(machineRules);
      });

      it('may set their own net.* sysctls, and no other', async () => {
        const sb = sandbox();
        const h = sb.hosts[0]!;
        const machine = readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8');
        const flipped = machine.trim() === '1' ? '0' : '1';
        expect(await sshOk(sb, h, `sysctl -w net.ipv4.ip_forward=${flipped} && cat /proc/sys/net/ipv4/ip_forward`)).toBe(`net.ipv4.ip_forward = ${flipped}\n${flipped}\n`);
        expect(readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8')).toBe(machine);
        expect((await sshRun(sb, h, 'sysctl -w kernel.pid_max=40000')).code).not.toBe(0);
      });

      it('reach the package mirror and the web through the proxy on this machine (apt, and logins’ proxy variables), which passes ports 80 and 443 only', async () => {
        const sb = sandbox();
        const h = sb.hosts[0]!;
        const machineEnd = h.address.replace(/\.2$/, '.1');
        expect(await sshOk(sb, h, 'cd /tmp && apt-get download -q hello >/dev/null 2>&1 && ls hello_*.deb && rm -f hello_*.deb')).toMatch(/^hello_.*\.deb\n$/);
        // No route out: the mirror's own address is unreachable from the host.
        const { address } = await lookup('deb.debian.org', { family: 4 });
        const direct = await sshRun(sb, h, `timeout 5 bash -c 'exec 3<>/dev/tcp/${address}/80' 2>&1`);
        expect(direct.code, direct.stdout).not.toBe(0);
        expect(direct.stdout).toMatch(/unreachable/i);
        const ask = (line: string) => sshOk(sb, h, `exec 3<>/dev/tcp/${machineEnd}/3142; printf '${line}\\r\\nHost: x\\r\\n\\r\\n' >&3; head -1 <&3`, {}).then((s) => s.trim());
        expect(await ask(`GET http://${address}:22/ HTTP/1.0`)).toMatch(/^HTTP\/1\.1 403/);
        expect(await ask(`CONNECT ${address}:22 HTTP/1.1`)).toMatch(/^HTTP\/1\.1 403/);
        // A login's programs have the proxy in their environment: curl reaches the web. (Over TLS
        // the proxy only passes bytes; whether the host trusts what answers is the network's
        // business: where TLS is re-signed on the way out, as here, the host lacks that CA.)
        expect(await sshOk(sb, h, `curl -sS -o /dev/null -w '%{http_code}' http://deb.debian.org/debian/dists/bookworm/Release`)).toBe('200');
        expect(await sshOk(sb, h, 'echo "$https_proxy"')).toBe(`http://${machineEnd}:3142/\n`);
      });

      it('stop() takes the veth pair and the proxy with it', async () => {
        const sb = sandbox();
        const machineEnd = sb.hosts[0]!.address.replace(/\.2$/, '.1');
        const proxies = () =>
          readdirSync('/proc')
            .filter((n) => /^\d+$/.test(n))
            .filter((n) => {
              try {
                return readFileSync(`/proc/${n}/cmdline`, 'utf8').split('\0').includes(machineEnd);
              } catch {
                return false;
              }
            });
        expect(proxies().length).toBe(1);
        const link = `hsv${slotOf(sb.hosts[0]!)}@`;
        await stopsClean(sb);
        expect(links()).not.toContain(link);
        expect(proxies()).toEqual([]);
      });
    },
    { kind },
  );
}
