/**
 * Tests of the real-host harness itself (test/hosts): the hosts are real,
 * distinct, resettable, have the promised users, and leave nothing behind.
 */
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { expect, it } from 'vitest';
import { sandboxPidNamespaces } from './hosts/hosts.js';
import { sshOk, sshRun } from './hosts/ssh.js';
import { describeHosts, useSandbox } from './hosts/use-sandbox.js';
import { mountsUnder } from './hosts/util.js';

/** Host pids (as seen from here) of every process in the given pid namespaces. */
function processesIn(namespaces: string[]): number[] {
  const wanted = new Set(namespaces);
  return readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .filter((n) => {
      try {
        return wanted.has(readlinkSync(`/proc/${n}/ns/pid`));
      } catch {
        return false; // exited meanwhile
      }
    })
    .map(Number);
}

/** Alive and not a zombie waiting to be reaped. */
function running(pid: number): boolean {
  try {
    return !/\) [ZX] /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

describeHosts('sandbox hosts', () => {
  const sandbox = useSandbox(2);

  it('starts distinct hosts with their own hostname and loopback address', async () => {
    const sb = sandbox();
    const [h1, h2] = sb.hosts;
    expect(sb.hosts.map((h) => h.name)).toEqual(['h1', 'h2']);
    expect(h1!.address).toMatch(/^127\.0\.0\.\d+$/);
    expect(h1!.address).not.toBe(h2!.address);
    expect((await sshOk(sb, h1!, 'hostname')).trim()).toBe('h1');
    expect((await sshOk(sb, h2!, 'hostname')).trim()).toBe('h2');
    expect((await sshOk(sb, h1!, 'cat /etc/debian_version')).trim()).toMatch(/^12\./);
    // sshd is PID 1's child in a pid namespace of its own
    expect((await sshOk(sb, h1!, 'cat /proc/1/cmdline | tr "\\0" " "')).trim()).toContain('tini');
    // the kernel is shared with this machine: its settings must not be writable from a host
    expect(await sshOk(sb, h1!, 'grep " /proc/sys " /proc/self/mounts')).toMatch(/ ro[, ]/);
  });

  it('writes the client files: known_hosts, ssh_config, inventory', () => {
    const sb = sandbox();
    const known = readFileSync(sb.knownHostsPath, 'utf8');
    const config = readFileSync(sb.sshConfigPath, 'utf8');
    const inventory = readFileSync(sb.inventoryPath, 'utf8');
    for (const h of sb.hosts) {
      expect(known).toContain(`[${h.address}]:${h.port} ssh-ed25519 `);
      expect(config).toContain(`Host ${h.name}\n  HostName ${h.address}\n  Port ${h.port}\n`);
      expect(inventory).toContain(`  ${h.name}: { address: ${h.address}, port: ${h.port} }`);
    }
    expect(inventory).toContain(`defaults: { user: root, identity: ${sb.keyPath} }`);
  });

  it('keeps each host’s filesystem to itself', async () => {
    const sb = sandbox();
    const [h1, h2] = sb.hosts;
    await sshOk(sb, h1!, 'cat > /etc/hostsmith-marker', { input: 'only on h1\n' });
    expect(await sshOk(sb, h1!, 'cat /etc/hostsmith-marker')).toBe('only on h1\n');
    expect((await sshRun(sb, h2!, 'test -e /etc/hostsmith-marker')).code).toBe(1);
  });

  it('gives deploy passwordless sudo and nosudo none', async () => {
    const sb = sandbox();
    const h1 = sb.hosts[0]!;
    expect((await sshOk(sb, h1, 'whoami', { user: 'deploy' })).trim()).toBe('deploy');
    expect((await sshOk(sb, h1, 'sudo -n whoami', { user: 'deploy' })).trim()).toBe('root');
    expect((await sshOk(sb, h1, 'echo $HOME $SHELL', { user: 'deploy' })).trim()).toBe('/home/deploy /bin/bash');
    const denied = await sshRun(sb, h1, 'sudo -n whoami', { user: 'nosudo' });
    expect(denied.code).not.toBe(0);
    expect(denied.stderr).toMatch(/password is required|not in the sudoers|may not run sudo/);
  });

  it('runs daemons under an init that reaps zombies', async () => {
    const sb = sandbox();
    const h1 = sb.hosts[0]!;
    await sshOk(sb, h1, 'service cron start');
    expect(await sshOk(sb, h1, 'pgrep -x cron')).toMatch(/^\d+\n$/);
    // an orphan that exits becomes a child of PID 1 (tini), which must reap it
    await sshOk(sb, h1, 'sh -c "sleep 0.2 & exec true"; sleep 1');
    expect((await sshOk(sb, h1, 'ps -eo stat= | grep -c "^Z" || true')).trim()).toBe('0');
  });

  it('restart({ wipe: true }) gives a fresh host on the same address, port and host key', async () => {
    const sb = sandbox();
    const h1 = sb.hosts[0]!;
    const before = { address: h1.address, port: h1.port, pid: h1.pid };
    const knownBefore = readFileSync(sb.knownHostsPath, 'utf8');
    await sshOk(sb, h1, 'echo hi > /root/leftover');
    await sb.restart(h1, { wipe: true });
    expect(h1.pid).not.toBe(before.pid);
    expect({ address: h1.address, port: h1.port }).toEqual({ address: before.address, port: before.port });
    expect(readFileSync(sb.knownHostsPath, 'utf8')).toBe(knownBefore);
    expect((await sshRun(sb, h1, 'test -e /root/leftover || test -e /etc/hostsmith-marker')).code).toBe(1);
    expect((await sshOk(sb, h1, 'sudo -n true && hostname', { user: 'deploy' })).trim()).toBe('h1');
    expect(await sshOk(sb, h1, 'pgrep -x cron || echo none')).toBe('none\n');
  });

  it('restart() without wipe keeps the host’s files', async () => {
    const sb = sandbox();
    const h2 = sb.hosts[1]!;
    await sshOk(sb, h2, 'echo kept > /root/kept');
    await sb.restart(h2);
    expect(await sshOk(sb, h2, 'cat /root/kept')).toBe('kept\n');
  });

  it('stop() leaves no process, no mount and no files behind', async () => {
    const sb = sandbox();
    const namespaces = sandboxPidNamespaces(sb.dir);
    expect(namespaces).toHaveLength(2);
    expect(processesIn(namespaces).length).toBeGreaterThanOrEqual(4); // tini + sshd per host
    const pids = sb.hosts.map((h) => h.pid);
    await sb.stop();
    expect(processesIn(namespaces)).toEqual([]);
    for (const pid of pids) expect(running(pid), `unshare pid ${pid}`).toBe(false);
    expect(mountsUnder(sb.dir)).toEqual([]);
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(sb.dir);
    expect(existsSync(sb.dir)).toBe(false);
    await sb.stop(); // idempotent
  });
});
