/**
 * The `sysctl` and `authorized_key` step types on real hosts: each held to the whole contract by
 * the step battery (apply, rerun, undo, a later failure, SIGKILL then recover; zero residue), plus
 * the cases the battery cannot make: a hostile user's links around authorized_keys, a live write
 * the host refuses, a kernel parameter that does not exist.
 *
 * Hosts on this machine's network mount /proc/sys read-only so that no recipe can change the
 * machine (test/hosts/README.md): no kernel parameter is writable there, so the batteries on them
 * use `apply_live: false`, and the one live write tried on one is kernel.domainname, which lives
 * in the host's own UTS namespace. The live write itself is held to the battery on a host with a
 * network of its own, where the net.* parameters are the host's (net.core.somaxconn), and this
 * machine's value is checked each time not to have moved.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Sandbox, SandboxHost } from '../hosts/hosts.js';
import { residue, snapshotHost, type HostSnapshot } from '../hosts/residue.js';
import { sshOk } from '../hosts/ssh.js';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { fixture, hostsmith, sandboxArgs, stepEvents, type CliResult } from './cli.js';
import { stepBattery } from './step-battery.js';

const K1 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPken9HDuEaIlFtUhVwfTd2D/rcqidGfwsQtFjseGvfB k1@test';
const K2 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILKI2XaiEx5bXmmmObv1YN937iWnn01KLDQEIR0ZIPeQ k2@test';
const K3 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGeXlRcaCNrftFB35kSAyIVnCBmaxCrOrhFA6BCkgk58 k3@test';

/** Name, mode, owner and content of each path, read with plain ssh ("absent" when not there). */
const show = (...paths: string[]) => `for p in ${paths.join(' ')}; do if [ -e "$p" ]; then stat -c '%n %a %U:%G %F' -- "$p"; [ -f "$p" ] && cat -- "$p"; else echo "$p absent"; fi; done`;

const SHARED = '/etc/sysctl.d/90-hostsmith-test.conf';
const SHARED_BEFORE = '# ops\nvm.dirty_ratio = 20\nkernel.printk = 3 4 1 3\n';

// The live side, on a host whose network namespace is its own: there the net.* parameters are
// the host's, writable, and this machine's stay as they are (checked each time).
const MACHINE_SOMAXCONN = readFileSync('/proc/sys/net/core/somaxconn', 'utf8');
stepBattery('sysctl, set live', {
  sandbox: { net: 'private' },
  steps: '  - name: Accept queue\n    sysctl: { name: net.core.somaxconn, value: "1234" }\n',
  verify: async (sb, h) => {
    expect(await sshOk(sb, h, 'sysctl -n net.core.somaxconn; cat /etc/sysctl.d/99-hostsmith-net.core.somaxconn.conf')).toBe('1234\nnet.core.somaxconn = 1234\n');
    expect(readFileSync('/proc/sys/net/core/somaxconn', 'utf8')).toBe(MACHINE_SOMAXCONN);
  },
  restored: async (sb, h) => {
    expect(await sshOk(sb, h, 'sysctl -n net.core.somaxconn')).toBe('4096\n');
    expect(readFileSync('/proc/sys/net/core/somaxconn', 'utf8')).toBe(MACHINE_SOMAXCONN);
  },
});

stepBattery('sysctl', {
  setup: async (sb, h) => {
    await sshOk(sb, h, `printf '%s' '${SHARED_BEFORE}' > ${SHARED}`);
  },
  steps: [
    '  - name: Swappiness',
    '    sysctl: { name: vm.swappiness, value: 17, apply_live: false }',
    '  - name: Dirty ratio',
    `    sysctl: { name: vm.dirty_ratio, value: "15", file: ${SHARED}, apply_live: false }`,
    '',
  ].join('\n'),
  verify: async (sb, h) => {
    expect(await sshOk(sb, h, show('/etc/sysctl.d/99-hostsmith-vm.swappiness.conf', SHARED))).toBe(
      [
        '/etc/sysctl.d/99-hostsmith-vm.swappiness.conf 644 root:root regular file',
        'vm.swappiness = 17',
        `${SHARED} 644 root:root regular file`,
        '# ops',
        'vm.dirty_ratio = 15',
        'kernel.printk = 3 4 1 3',
        '',
      ].join('\n'),
    );
  },
});

stepBattery('authorized_key', {
  // keyuser has no ~/.ssh (the step makes it); keyuser2 has a file of its own (the step edits it, from a backup).
  setup: async (sb, h) => {
    await sshOk(
      sb,
      h,
      [
        'useradd -m -s /bin/bash keyuser',
        'useradd -m -s /bin/bash keyuser2',
        'install -d -m 0700 -o keyuser2 -g keyuser2 /home/keyuser2/.ssh',
        `printf '# mine\\n%s\\n%s\\n' '${K1}' '${K2}' > /home/keyuser2/.ssh/authorized_keys`,
        'chown keyuser2:keyuser2 /home/keyuser2/.ssh/authorized_keys && chmod 0640 /home/keyuser2/.ssh/authorized_keys',
      ].join(' && '),
    );
  },
  steps: [
    '  - name: Keys',
    '    authorized_key:',
    '      user: keyuser',
    `      keys: ["${K1}", "${K2}"]`,
    '  - name: Only K3',
    '    authorized_key:',
    '      user: keyuser2',
    `      key: "${K3}"`,
    '      exclusive: true',
    '      options: \'from="10.0.0.0/8",no-pty\'',
    '',
  ].join('\n'),
  verify: async (sb, h) => {
    expect(await sshOk(sb, h, show('/home/keyuser/.ssh', '/home/keyuser/.ssh/authorized_keys', '/home/keyuser2/.ssh/authorized_keys'))).toBe(
      [
        '/home/keyuser/.ssh 700 keyuser:keyuser directory',
        '/home/keyuser/.ssh/authorized_keys 600 keyuser:keyuser regular file',
        K1,
        K2,
        // An existing file keeps its mode and owner; comments stay.
        '/home/keyuser2/.ssh/authorized_keys 640 keyuser2:keyuser2 regular file',
        '# mine',
        `from="10.0.0.0/8",no-pty ${K3}`,
        '',
      ].join('\n'),
    );
  },
});

const said = (r: CliResult) => `exit ${r.code}\n${r.stdout}\n${r.stderr}`.slice(-3000);
/** Kind, mode, owner and hash of the files a planted link aims at. */
const PROTECTED = `for f in /etc/shadow /etc/passwd; do printf '%s %s %s\\n' "$f" "$(stat -c '%F %a %U:%G' -- "$f")" "$(sha256sum < "$f" | cut -c1-64)"; done; ls -la /etc | grep -c authorized_keys || true`;

describeHosts('sysctl and authorized_key where the battery does not go', () => {
  const sandbox = useSandbox(1);
  const temps: string[] = [];
  let state = '';
  let snap: HostSnapshot;
  const host = (): [Sandbox, SandboxHost] => [sandbox(), sandbox().hosts[0]!];
  const root = (cmd: string) => sshOk(...host(), cmd);
  const apply = (steps: string) => {
    const dir = fixture({ 'r.yml': `name: system\nsteps:\n${steps}` });
    state = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
    temps.push(dir, state);
    return hostsmith(['apply', join(dir, 'r.yml'), '--yes', '--hosts', host()[1].name, '--json', ...sandboxArgs(sandbox(), state)]);
  };
  const zero = async () => expect(await residue(...host(), snap)).toEqual([]);

  beforeAll(async () => {
    await root('useradd -m -s /bin/bash victim && install -d -m 0700 -o victim -g victim /home/victim/.ssh');
  });
  afterAll(() => temps.forEach((d) => rmSync(d, { recursive: true, force: true })));

  it('authorized_keys planted by its user as a link to /etc/shadow: the step fails naming the link, /etc/shadow untouched, nothing changed', async () => {
    await root('rm -rf /home/victim/.ssh/authorized_keys && runuser -u victim -- ln -s /etc/shadow /home/victim/.ssh/authorized_keys');
    const before = await root(PROTECTED);
    snap = await snapshotHost(...host());
    const r = await apply(`  - name: Keys\n    authorized_key: { user: victim, key: "${K1}" }\n`);
    expect(r.code, said(r)).toBe(1);
    expect(stepEvents(r).map((e) => [e.step, e.status])).toEqual([['Keys', 'failed']]);
    expect(r.stdout + r.stderr).toContain('/home/victim/.ssh/authorized_keys is a symbolic link (to /etc/shadow); hostsmith does not read or write keys through a link');
    expect(await root(PROTECTED)).toBe(before);
    expect(await root('stat -c "%F %U" /home/victim/.ssh/authorized_keys')).toBe('symbolic link victim\n');
    await zero();
  });

  it('~/.ssh planted by its user as a link to /etc: refused naming ~/.ssh, nothing written in /etc', async () => {
    await root('rm -rf /home/victim/.ssh && runuser -u victim -- ln -s /etc /home/victim/.ssh');
    const before = await root(PROTECTED);
    snap = await snapshotHost(...host());
    const r = await apply(`  - name: Keys\n    authorized_key: { user: victim, key: "${K1}" }\n`);
    expect(r.code, said(r)).toBe(1);
    expect(r.stdout + r.stderr).toMatch(/refusing \/home\/victim\/\.ssh: it is a symbolic link/);
    expect(await root(PROTECTED)).toBe(before);
    await zero();
    await root('rm -f /home/victim/.ssh && install -d -m 0700 -o victim -g victim /home/victim/.ssh');
  });

  it('a user that does not exist is a clear error', async () => {
    snap = await snapshotHost(...host());
    const r = await apply(`  - name: Keys\n    authorized_key: { user: nobody-here, key: "${K1}" }\n`);
    expect(r.code, said(r)).toBe(1);
    expect(r.stdout + r.stderr).toContain('user nobody-here does not exist on this host');
    await zero();
  });

  it('sysctl: a live write the host refuses fails the step and the drop-in it wrote is removed again (zero residue)', async () => {
    snap = await snapshotHost(...host());
    // kernel.domainname: the host's own UTS namespace, never this machine's (see the top of this file).
    const r = await apply('  - name: Domain\n    sysctl: { name: kernel.domainname, value: hs.example }\n');
    expect(r.code, said(r)).toBe(1);
    expect(r.stdout + r.stderr).toMatch(/setting kernel\.domainname to hs\.example in the running kernel failed \(exit \d+\): .*Read-only file system/);
    expect(await root(show('/etc/sysctl.d/99-hostsmith-kernel.domainname.conf'))).toBe('/etc/sysctl.d/99-hostsmith-kernel.domainname.conf absent\n');
    await zero();
  });

  it('sysctl: a kernel parameter the host does not have is a clear error, before any change', async () => {
    snap = await snapshotHost(...host());
    const r = await apply('  - name: Nope\n    sysctl: { name: kernel.hostsmith_no_such_key, value: 1 }\n');
    expect(r.code, said(r)).toBe(1);
    expect(r.stdout + r.stderr).toContain('no kernel parameter kernel.hostsmith_no_such_key on this host (/proc/sys/kernel/hostsmith_no_such_key does not exist)');
    await zero();
  });
});
