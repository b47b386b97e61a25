/**
 * `hostname` and `timezone` on real hosts, checked with plain ssh, never through hostsmith.
 *
 * Setting the live name is safe here: each sandbox host runs in its own UTS namespace
 * (`unshare --mount --uts --pid` in test/hosts/hosts.ts, `hostname <name>` in its boot script), so
 * sethostname changes that host alone; every check below also holds this machine's name fixed.
 * tzdata is in the sandbox rootfs (Priority: required, so debootstrap's minbase has it), so the
 * timezone battery needs no setup.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { hostname as machineName } from 'node:os';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import type { Sandbox, SandboxHost } from '../hosts/hosts.js';
import { sshOk, sshRun } from '../hosts/ssh.js';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { fixture, hostsmith, sandboxArgs, stepEvents } from './cli.js';
import { stepBattery } from './step-battery.js';

const MACHINE = machineName();

/** The host's running name is its own again (the boot script set it to the host's name), and this machine's never moved. */
async function liveNameIsOriginal(sb: Sandbox, h: SandboxHost): Promise<void> {
  expect(await sshOk(sb, h, 'uname -n')).toBe(`${h.name}\n`);
  expect(machineName()).toBe(MACHINE);
}

stepBattery('hostname', {
  steps: `  - name: Name it
    hostname: { name: web1, fqdn: web1.example.org }
`,
  async verify(sb, h) {
    expect(await sshOk(sb, h, "hostname; uname -n; cat /etc/hostname; grep '^127\\.0\\.1\\.1' /etc/hosts; hostname -f")).toBe('web1\nweb1\nweb1\n127.0.1.1\tweb1.example.org web1\nweb1.example.org\n');
    // The line went where Debian puts it, and nothing else in the file moved.
    expect(await sshOk(sb, h, 'cat /etc/hosts')).toBe(`127.0.0.1\tlocalhost\n127.0.1.1\tweb1.example.org web1\n${h.address}\t${h.name}\n::1\tlocalhost ip6-localhost ip6-loopback\n`);
    expect(machineName()).toBe(MACHINE);
  },
  restored: liveNameIsOriginal,
});

stepBattery('timezone', {
  steps: `  - name: Berlin time
    timezone: { name: Europe/Berlin }
`,
  async verify(sb, h) {
    expect(await sshOk(sb, h, 'readlink /etc/localtime; cat /etc/timezone; date -d @1700000000 +%Z%z; date -d @1720000000 +%Z')).toBe(
      '/usr/share/zoneinfo/Europe/Berlin\nEurope/Berlin\nCET+0100\nCEST\n',
    );
  },
  async restored(sb, h) {
    expect(await sshOk(sb, h, 'readlink /etc/localtime; cat /etc/timezone; date -d @1700000000 +%Z')).toBe('/usr/share/zoneinfo/Etc/UTC\nEtc/UTC\nUTC\n');
  },
});

// The same contract on a booted systemd host, where the live name goes through hostnamectl (and
// systemd-hostnamed) and what timedatectl shows must follow the link.
stepBattery('hostname on a systemd host', {
  sandbox: { kind: 'systemd' },
  steps: `  - name: Name it
    hostname: { name: web1, fqdn: web1.example.org }
`,
  async verify(sb, h) {
    expect(await sshOk(sb, h, 'hostnamectl --static; hostnamectl --transient; uname -n; cat /etc/hostname; hostname -f')).toBe('web1\nweb1\nweb1\nweb1\nweb1.example.org\n');
    expect(machineName()).toBe(MACHINE);
  },
  async restored(sb, h) {
    expect(await sshOk(sb, h, 'hostnamectl --static; uname -n')).toBe(`${h.name}\n${h.name}\n`);
    expect(machineName()).toBe(MACHINE);
  },
});

/**
 * The zone timedatectl shows. systemd-timedated is started on demand over D-Bus, and on a loaded
 * machine that can take longer than timedatectl waits: asked again until it answers (20 s at most),
 * so the check is of the zone it shows, not of how fast it starts.
 */
const TIMEDATECTL_ZONE = 'z=; for i in $(seq 40); do z=$(timedatectl show -p Timezone --value 2>/dev/null) && break; sleep 0.5; done; echo "$z"';

stepBattery('timezone on a systemd host', {
  sandbox: { kind: 'systemd' },
  steps: `  - name: Berlin time
    timezone: { name: Europe/Berlin }
`,
  async verify(sb, h) {
    expect(await sshOk(sb, h, `${TIMEDATECTL_ZONE}; cat /etc/timezone; date -d @1700000000 +%Z%z`)).toBe('Europe/Berlin\nEurope/Berlin\nCET+0100\n');
  },
  async restored(sb, h) {
    expect(await sshOk(sb, h, `${TIMEDATECTL_ZONE}; cat /etc/timezone`)).toBe('Etc/UTC\nEtc/UTC\n');
  },
});

describeHosts('hostname and timezone: what the batteries do not cover', () => {
  const sandbox = useSandbox(1);
  const dirs: string[] = [];
  afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
  const state = () => {
    const d = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
    dirs.push(d);
    return d;
  };
  const recipe = (steps: string) => {
    const dir = fixture({ 'r.yml': `name: types-host\nsteps:\n${steps}` });
    dirs.push(dir);
    return join(dir, 'r.yml');
  };

  it('undo of a run that renamed the host sets the live name back to the original', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const s = state();
    const r = await hostsmith(['apply', recipe('  - name: Rename\n    hostname: { name: renamed, hosts_entry: false }\n'), '--yes', '--hosts', h.name, ...sandboxArgs(sb, s), '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(stepEvents(r)[0]).toMatchObject({ status: 'changed', summary: `set host name renamed (/etc/hostname: "${h.name}" → "renamed"; live: ${h.name} → renamed)` });
    expect(await sshOk(sb, h, 'uname -n; cat /etc/hostname')).toBe('renamed\nrenamed\n');
    const runId = r.events.find((e) => e.event === 'run-started')!.runId as string;
    const undo = await hostsmith(['undo', runId, '--yes', '--json', '--state-dir', s]);
    expect(undo.code, undo.stdout + undo.stderr).toBe(0);
    await liveNameIsOriginal(sb, h);
    expect(await sshOk(sb, h, 'cat /etc/hostname')).toBe(`${h.name}\n`);
  });

  it('a zone the host does not have: a step error that names tzdata, nothing written', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const r = await hostsmith(['apply', recipe('  - name: Mars\n    timezone: { name: Mars/Olympus_Mons }\n'), '--yes', '--hosts', h.name, ...sandboxArgs(sb, state())]);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stdout + r.stderr).toContain('no time zone Mars/Olympus_Mons on this host (/usr/share/zoneinfo/Mars/Olympus_Mons does not exist)');
    expect(r.stdout + r.stderr).toContain('install tzdata');
    expect(await sshOk(sb, h, 'readlink /etc/localtime; cat /etc/timezone')).toBe('/usr/share/zoneinfo/Etc/UTC\nEtc/UTC\n');
  });

  it('a name with ".." is refused at load, before any host is contacted (exit 2)', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const r = await hostsmith(['plan', recipe('  - name: Escape\n    timezone: { name: ../../etc/shadow }\n'), '--hosts', h.name, ...sandboxArgs(sb, state())]);
    expect(r.code, r.stdout + r.stderr).toBe(2);
    expect(r.stderr).toMatch(/time zone name/);
  });

  it('a copy of a zone file at /etc/localtime: replaced by the link, and rollback puts the very file back', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    await sshOk(sb, h, 'rm /etc/localtime && cp /usr/share/zoneinfo/Asia/Tokyo /etc/localtime && chmod 0600 /etc/localtime');
    const before = await sshOk(sb, h, 'stat -c "%F %a" /etc/localtime; sha256sum < /etc/localtime');
    const r = await hostsmith([
      'apply',
      recipe('  - name: Berlin\n    timezone: { name: Europe/Berlin }\n  - name: Then fail\n    command: { run: "exit 3" }\n'),
      '--yes',
      '--hosts',
      h.name,
      ...sandboxArgs(sb, state()),
      '--json',
    ]);
    expect(r.code, r.stderr).toBe(1);
    expect(stepEvents(r)[0]).toMatchObject({ status: 'changed', summary: expect.stringContaining('/etc/localtime: a copied zone file → a link to /usr/share/zoneinfo/Europe/Berlin') });
    expect(await sshOk(sb, h, 'stat -c "%F %a" /etc/localtime; sha256sum < /etc/localtime')).toBe(before);
    expect((await sshRun(sb, h, 'test -L /etc/localtime')).code).not.toBe(0);
  });
});
