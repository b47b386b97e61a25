/**
 * Package rollback leaves no residue of the maintainer scripts: the system users and groups they
 * added and ucf's state go back with the packages. Everything is read with plain ssh, byte for
 * byte, never through hostsmith.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeEach, expect, it } from 'vitest';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { sshOk } from '../hosts/ssh.js';
import { fixture, hostsmith, sandboxArgs, stepEvents } from './cli.js';

const ACCOUNTS = 'for f in passwd group shadow gshadow subuid subgid; do echo "== $f"; cat /etc/$f 2>&1; done';
/** Every file and folder under /var/lib/ucf with type, mode and owner, then the sha256 of every file. */
const UCF = `if [ -e /var/lib/ucf ]; then cd /var/lib/ucf && find . -printf '%y %m %u:%g %p\\n' | LC_ALL=C sort && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum; else echo absent; fi`;
const PACKAGES = `dpkg-query -W -f='\${Package} \${Version} \${Status}\\n' | sort; echo '--- auto'; apt-mark showauto`;
const snapshot = async (sb: Parameters<typeof sshOk>[0], h: Parameters<typeof sshOk>[1]) => ({
  accounts: await sshOk(sb, h, ACCOUNTS),
  ucf: await sshOk(sb, h, UCF),
  packages: await sshOk(sb, h, PACKAGES),
});

describeHosts('package rollback takes back what maintainer scripts added (accounts, ucf)', () => {
  const sandbox = useSandbox(1);
  let state: string;
  beforeEach(async () => {
    state = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
    await sandbox().restart(sandbox().hosts[0]!, { wipe: true });
  });
  const apply = (steps: string) =>
    hostsmith(['apply', join(fixture({ 'r.yml': `name: residue\nsteps:\n${steps}` }), 'r.yml'), '--hosts', sandbox().hosts[0]!.name, '--yes', '--json', ...sandboxArgs(sandbox(), state)]);
  const rollbacks = (r: { events: Array<Record<string, any>> }) => r.events.filter((e) => e.event === 'rollback-finished').map((e) => [e.step, e.status]);

  it('a later failure leaves the account files and /var/lib/ucf byte for byte as before the install', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    // fail2ban's service starts only when it finds the log of its sshd jail (no syslog on these hosts).
    await sshOk(sb, h, 'touch /var/log/auth.log');
    const before = await snapshot(sb, h);
    expect(before.accounts).not.toMatch(/^messagebus:/m);
    // The baseline; the failing step shows that the install did add messagebus and changed ucf's registry.
    const r = await apply(`  - name: Baseline
    package: { install: [unattended-upgrades, fail2ban, curl, rsync] }
  - name: Breaks
    command: { run: "getent passwd messagebus >&2; sha256sum /var/lib/ucf/registry >&2; exit 1" }
`);
    expect(r.code, r.stderr + r.stdout).toBe(1);
    const steps = stepEvents(r);
    expect(steps.map((e) => [e.step, e.status])).toEqual([
      ['Baseline', 'changed'],
      ['Breaks', 'failed'],
    ]);
    expect(steps[1]!.error).toMatch(/\bmessagebus:x:\d+:\d+:/);
    const registryMid = /^([0-9a-f]{64}) {2}\/var\/lib\/ucf\/registry$/m.exec(steps[1]!.error)?.[1];
    expect(registryMid).toBeDefined();
    expect(before.ucf).toMatch(/ \.\/registry$/m);
    expect(before.ucf).not.toContain(`${registryMid}  ./registry`);
    expect(rollbacks(r)).toEqual([['Baseline', 'rolled-back']]);
    expect(await snapshot(sb, h)).toEqual(before);
  });

  it('a system user that still owns a file is kept and the rollback says so; the packages still go', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const before = await snapshot(sb, h);
    const r = await apply(`  - name: Bus
    package: { install: [dbus] }
  - name: Keep
    command: { run: "install -d -o messagebus /srv/keep" }
  - name: Breaks
    command: { run: "false" }
`);
    expect(r.code, r.stderr + r.stdout).toBe(3);
    expect(rollbacks(r)).toEqual([
      ['Keep', 'rollback-failed'],
      ['Bus', 'rollback-failed'],
    ]);
    const bus = r.events.find((e) => e.event === 'rollback-finished' && e.step === 'Bus')!;
    expect(bus.error).toContain(`rolled back the packages on ${h.name}, but kept`);
    expect(bus.error).toMatch(/user messagebus \(uid \d+\): it still owns \/srv\/keep/);
    expect(bus.error).toMatch(/group messagebus \(gid \d+\): it is the primary group of messagebus/);
    expect(bus.error).toContain('deluser --system messagebus');
    expect(r.events.find((e) => e.event === 'host-finished')).toMatchObject({ status: 'rollback-incomplete' });

    const after = await snapshot(sb, h);
    expect(after.packages).toBe(before.packages);
    expect(after.ucf).toBe(before.ucf);
    // Exactly the messagebus entries were added; every other line is as before.
    const added = (b: string, a: string) => a.split('\n').filter((l) => !b.split('\n').includes(l));
    expect(added(before.accounts, after.accounts).map((l) => l.split(':')[0])).toEqual(['messagebus', 'messagebus', 'messagebus', 'messagebus']);
    expect(after.accounts.split('\n').filter((l) => !/^messagebus:/.test(l))).toEqual(before.accounts.split('\n'));
    expect(await sshOk(sb, h, 'stat -c %U /srv/keep')).toBe('messagebus\n');
  });

  it('an account someone else adds after the install stays; the ones the install added go', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const before = await snapshot(sb, h);
    const r = await apply(`  - name: Bus
    package: { install: [dbus] }
  - name: Bystander
    command: { run: "useradd -r bystander", rollback: "true" }
  - name: Breaks
    command: { run: "false" }
`);
    expect(r.code, r.stderr + r.stdout).toBe(1);
    expect(rollbacks(r)).toEqual([
      ['Bystander', 'rolled-back'],
      ['Bus', 'rolled-back'],
    ]);
    const after = await snapshot(sb, h);
    expect(after.packages).toBe(before.packages);
    expect(after.accounts).not.toMatch(/^messagebus:/m);
    expect(after.accounts.split('\n').filter((l) => !/^bystander:/.test(l))).toEqual(before.accounts.split('\n'));
    expect(after.accounts.match(/^bystander:/gm)).toHaveLength(4);
  });

  it('a later `undo <run-id>` takes them back from the journal alone, with a fresh connection and no recipe', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const before = await snapshot(sb, h);
    const r = await apply(`  - name: Bus
    package: { install: [dbus] }
`);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(await sshOk(sb, h, 'getent passwd messagebus >/dev/null && echo present')).toBe('present\n');
    const runId = r.events.find((e) => e.event === 'run-started')!.runId as string;
    const u = await hostsmith(['undo', runId, '--yes', '--state-dir', state]);
    expect(u.code, u.stderr + u.stdout).toBe(0);
    expect(await snapshot(sb, h)).toEqual(before);
  });
});
