/**
 * `firewall` on real hosts, checked with plain ssh, never through hostsmith.
 *
 * Every host here has a network namespace of its own (`net: 'private'`): nft there changes that
 * host's firewall and nothing of this machine's. Each test first proves it (the host's network
 * namespace is not this process's) and stops before any nft runs if not.
 *
 * The live ruleset lives outside the filesystem, so the battery's `restored` compares it, as
 * `nft -s list ruleset` prints it, with the listing taken before the first run.
 * - the whole ruleset: /etc/nftables.conf (nftables ships one) replaced, the live ruleset flushed
 *   and loaded; every rollback puts both back;
 * - one table: a table of someone else's (`inet keep`) is there first and stays through every
 *   apply and rollback; /etc/nftables.conf gains the include, and loses it again.
 * Beyond the battery: nft's own message for a syntax error at plan, an unknown family at load
 * (file:line:col), nft missing on the host, a drop-in folder planted as a link by a local user,
 * and the lockouts: a ruleset that refuses new SSH logins under `--confirm` (rolled back over the
 * run's own connection, or by the watchdog when that link is cut too), and one that cuts the run's
 * own connection (the host loads the old ruleset by itself; the run gets back in and rolls back).
 */
import { mkdtempSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Sandbox, SandboxHost } from '../hosts/hosts.js';
import { sshOk } from '../hosts/ssh.js';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { fixture, hostsmith, sandboxArgs, stepEvents } from './cli.js';
import { stepBattery } from './step-battery.js';

const PRIVATE = { net: 'private' } as const;

/** Refuses to go on unless the host's network namespace is its own: nft must never touch this machine's. */
async function ownNetwork(sb: Sandbox, h: SandboxHost): Promise<void> {
  const mine = readlinkSync('/proc/self/ns/net');
  const theirs = (await sshOk(sb, h, 'readlink /proc/self/ns/net')).trim();
  if (!theirs || theirs === mine) throw new Error(`sandbox host ${h.name} shares this machine's network namespace (${mine}): refusing to run nft there`);
}

const listing = (sb: Sandbox, h: SandboxHost) => sshOk(sb, h, 'nft -s list ruleset');

/** The host's own revert timer is stopped once the controller confirms: none is left running. */
const noTimer = async (sb: Sandbox, h: SandboxHost) => expect(await sshOk(sb, h, "ps -eo args | grep '[h]ostsmith-nft-revert'; true")).toBe('');

const WHOLE_BODY = `table inet hs_filter {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 8081 drop
  }
}
`;

let wholeBefore = '';
stepBattery('firewall (the whole ruleset)', {
  sandbox: PRIVATE,
  steps: `  - name: Firewall
    firewall:
      content: |
${WHOLE_BODY.replace(/^/gm, '        ').replace(/ +$/, '')}`,
  async setup(sb, h) {
    await ownNetwork(sb, h);
    wholeBefore = await listing(sb, h);
  },
  async verify(sb, h) {
    expect(await sshOk(sb, h, 'cat /etc/nftables.conf')).toBe(`flush ruleset\n${WHOLE_BODY}`);
    const live = await listing(sb, h);
    await noTimer(sb, h);
    expect(live).toMatch(/^table inet hs_filter \{\n\tchain input \{\n\t\ttype filter hook input priority filter; policy accept;\n\t\ttcp dport 8081 drop\n\t\}\n\}\n$/);
  },
  async restored(sb, h) {
    expect(await listing(sb, h)).toBe(wholeBefore);
  },
});

/** A table someone else keeps: the table form must never touch it. */
const KEEP = 'table inet keep {\n  chain c { type filter hook output priority 10; policy accept; }\n}\n';
let tableBefore = '';
stepBattery('firewall (one table)', {
  sandbox: PRIVATE,
  steps: `  - name: App table
    firewall:
      table: { family: inet, name: app }
      content: |
        set ports { type inet_service; elements = { 80, 443 } }
        chain input {
          type filter hook input priority 0; policy accept;
          tcp dport @ports accept
        }
`,
  async setup(sb, h) {
    await ownNetwork(sb, h);
    await sshOk(sb, h, 'nft -f /dev/stdin', { input: KEEP });
    tableBefore = await listing(sb, h);
    expect(tableBefore).toContain('table inet keep');
  },
  async verify(sb, h) {
    await noTimer(sb, h);
    expect(await sshOk(sb, h, 'nft -s list table inet app')).toMatch(/set ports \{\n\t\ttype inet_service\n\t\telements = \{ 80, 443 \}\n\t\}\n\n\tchain input \{[\s\S]*tcp dport @ports accept/);
    // The other table is untouched; the drop-in replaces its own table alone; the conf includes it.
    expect(await listing(sb, h)).toContain('table inet keep');
    expect(await sshOk(sb, h, 'sed -n 3,5p /etc/nftables.d/inet-app.nft')).toBe('table inet app\ndelete table inet app\ntable inet app {\n');
    expect(await sshOk(sb, h, 'tail -n 1 /etc/nftables.conf')).toBe('include "/etc/nftables.d/*.nft"\n');
    // What the host loads at boot gives the same: the conf (with its flush) then the drop-in.
    expect(await sshOk(sb, h, 'nft -c -f /etc/nftables.conf && echo ok')).toBe('ok\n');
  },
  async restored(sb, h) {
    expect(await listing(sb, h)).toBe(tableBefore);
  },
});

describeHosts(
  'firewall: what the battery does not cover',
  () => {
    const sandbox = useSandbox(1, PRIVATE);
    const dirs: string[] = [];
    const host = () => sandbox().hosts[0]!;
    const state = () => {
      const d = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
      dirs.push(d);
      return d;
    };
    const sha = () => sshOk(sandbox(), host(), 'sha256sum /etc/nftables.conf; nft -s list ruleset | sha256sum');
    beforeAll(async () => {
      await ownNetwork(sandbox(), host());
    });
    afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

    it('a syntax error fails the plan at the step, with nft’s own message and the file’s line; nothing changes', async () => {
      const before = await sha();
      const dir = fixture({ 'r.yml': 'name: bad\nsteps:\n  - name: Firewall\n    firewall:\n      content: |\n        table inet t {\n          chain c { tcp dport 22 acept }\n        }\n' });
      dirs.push(dir);
      const r = await hostsmith(['plan', join(dir, 'r.yml'), '--hosts', host().name, ...sandboxArgs(sandbox(), state()), '--json']);
      expect(r.code, r.stdout + r.stderr).not.toBe(0);
      const ev = stepEvents(r).find((e) => e.step === 'Firewall');
      expect(ev, r.stdout + r.stderr).toMatchObject({ status: 'failed' });
      // The file as written starts with the flush line: the user's line 2 is the file's line 3.
      expect(ev!.error).toMatch(/the new ruleset for \/etc\/nftables\.conf does not pass nft -c, so nothing was changed:\n\/etc\/nftables\.conf:3:\d+-\d+: Error: /);
      expect(await sha()).toBe(before);
    });

    it('an unknown family is refused at load, with file:line:col, before any host is contacted', async () => {
      const dir = fixture({ 'r.yml': 'name: bad\nsteps:\n  - name: Firewall\n    firewall:\n      table: { family: ipv4, name: app }\n      content: "chain c {}"\n' });
      dirs.push(dir);
      const r = await hostsmith(['plan', join(dir, 'r.yml'), '--hosts', host().name, ...sandboxArgs(sandbox(), state())]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/r\.yml:5:\d+: steps\[0\]\.firewall\.table\.family: must be one of: ip, ip6, inet, arp, bridge, netdev \(got "ipv4"\)/);
    });

    it('nft missing on the host: the step says to install nftables first', async () => {
      await sshOk(sandbox(), host(), 'mv /usr/sbin/nft /usr/sbin/nft.hidden');
      try {
        const dir = fixture({ 'r.yml': 'name: nonft\nsteps:\n  - name: Firewall\n    firewall: { content: "table inet t {}" }\n' });
        dirs.push(dir);
        const r = await hostsmith(['plan', join(dir, 'r.yml'), '--hosts', host().name, ...sandboxArgs(sandbox(), state()), '--json']);
        expect(stepEvents(r).find((e) => e.step === 'Firewall')?.error, r.stdout + r.stderr).toMatch(
          /nft is not installed on this host, so the nftables ruleset cannot be read or loaded: add a step before this one that installs it \(package: \{ install: \[nftables\] \}\)/,
        );
      } finally {
        await sshOk(sandbox(), host(), 'mv /usr/sbin/nft.hidden /usr/sbin/nft');
      }
    });

    it('a drop-in folder that is a link a local user planted is refused, naming it; nothing is written through it and nothing is loaded', async () => {
      const sb = sandbox();
      const h = host();
      await sshOk(sb, h, 'mkdir -p /home/deploy/evil && chown deploy: /home/deploy/evil && ln -s /home/deploy/evil /etc/nftables.d && chown -h deploy: /etc/nftables.d');
      try {
        const before = await sha();
        const dir = fixture({ 'r.yml': 'name: planted\nsteps:\n  - name: App table\n    firewall: { table: { family: inet, name: app }, content: "chain c {\\n}" }\n' });
        dirs.push(dir);
        const r = await hostsmith(['apply', join(dir, 'r.yml'), '--hosts', h.name, '--yes', '--json', ...sandboxArgs(sb, state())]);
        expect(r.code, r.stdout + r.stderr).toBe(1);
        expect(stepEvents(r).find((e) => e.step === 'App table')?.error).toMatch(
          /refusing \/etc\/nftables\.d: it is a symbolic link \(owned by uid \d+\) that a user other than root could have planted/,
        );
        expect(await sshOk(sb, h, 'ls -A /home/deploy/evil')).toBe('');
        expect(await sha()).toBe(before);
      } finally {
        await sshOk(sb, h, 'rm -f /etc/nftables.d && rm -rf /home/deploy/evil');
      }
    });

    /** A recipe whose ruleset refuses new SSH connections to the host; established ones (the run's own) go on. */
    const lockoutRecipe = () => {
      const dir = fixture({
        'r.yml': 'name: lockout\nvars:\n  ssh_port: { required: true }\nsteps:\n  - name: Firewall\n    firewall: { src: rules.nft.hbs, vars: { port: "{{ssh_port}}" } }\n',
        'templates/rules.nft.hbs':
          'table inet lock {\n  chain input {\n    type filter hook input priority 0; policy accept;\n    ct state established,related accept\n    tcp dport {{port}} drop\n  }\n}\n',
      });
      dirs.push(dir);
      return join(dir, 'r.yml');
    };
    const LEFTOVERS = "ps -eo args | grep '[w]atchdog.sh'; ls -A /var/lib/hostsmith/watchdog 2>/dev/null; true";

    it('--confirm: a ruleset that refuses the next SSH login is not confirmed, and the run puts the old ruleset back over its own connection', async () => {
      const sb = sandbox();
      const h = host();
      const before = await sha();
      const r = await hostsmith(['apply', lockoutRecipe(), '--hosts', h.name, '--yes', '--json', '--confirm', '10s', '--var', `ssh_port=${h.port}`, ...sandboxArgs(sb, state())]);
      expect(r.code, r.stdout + r.stderr).toBe(1);
      expect(stepEvents(r).find((e) => e.step === 'Firewall')?.status).toBe('changed');
      const watchdog = r.events.filter((e) => e.event === 'watchdog');
      expect(watchdog.map((e) => e.what)).toEqual(['armed', 'disarmed']);
      expect(watchdog[1]!.message).toMatch(/not confirmed: a new SSH connection to h1 did not work .*; rolling back over the run's own connection/);
      expect(r.events.find((e) => e.event === 'rollback-finished' && e.step === 'Firewall')?.status).toBe('rolled-back');
      expect(r.events.find((e) => e.event === 'host-finished')!.status).toBe('rolled-back');
      // Plain ssh gets in again; the live ruleset and the file are as before; no watchdog is left.
      expect(await sha()).toBe(before);
      expect(await sshOk(sb, h, LEFTOVERS)).toBe('');
    }, 180_000);

    it('--confirm with the run’s own link gone too: the watchdog loads the old ruleset by itself and the host answers again', async () => {
      const sb = sandbox();
      const h = host();
      const before = await sha();
      const started = Date.now();
      // The firewall refuses the new login; the fault hook cuts the run's own link once the
      // watchdog is armed, so only the watchdog's own script can put the ruleset back.
      const r = await hostsmith(['apply', lockoutRecipe(), '--hosts', h.name, '--yes', '--json', '--confirm', '6s', '--var', `ssh_port=${h.port}`, ...sandboxArgs(sb, state())], {
        env: { HOSTSMITH_FAULT_CUT_AFTER_ARM: '1' },
      });
      expect(r.code, r.stdout + r.stderr).toBe(1);
      const watchdog = r.events.filter((e) => e.event === 'watchdog');
      expect(watchdog.map((e) => e.what)).toEqual(['armed', 'waiting', 'fired']);
      expect(watchdog[2]!.message).toMatch(/the watchdog rolled the host back by itself: rolled-back/);
      expect(r.events.find((e) => e.event === 'host-finished')!.status).toBe('rolled-back');
      expect(Date.now() - started).toBeGreaterThan(6000);
      expect(await sha()).toBe(before);
      expect(await sshOk(sb, h, LEFTOVERS)).toBe('');
    }, 180_000);

    it('a ruleset that cuts the run’s own connection too: the host loads the old ruleset by itself, the run gets back in and rolls the step back', async () => {
      const sb = sandbox();
      const h = host();
      const before = await sha();
      const dir = fixture({
        'r.yml':
          'name: cutoff\nsteps:\n  - name: Firewall\n    firewall:\n      content: |\n        table inet cut {\n          chain input { type filter hook input priority 0; policy accept; tcp dport 22 drop; }\n        }\n',
      });
      dirs.push(dir);
      const r = await hostsmith(['apply', join(dir, 'r.yml'), '--hosts', h.name, '--yes', '--json', '--confirm', '10s', ...sandboxArgs(sb, state())]);
      expect(r.code, r.stdout + r.stderr).toBe(1);
      const finished = r.events.find((e) => e.event === 'host-finished')!;
      // Either the link was declared lost (the engine reconnects once the host has reverted, finds
      // the files changed and rolls the step back) or it held until the revert (the step fails
      // and puts its files back): the host is as before, and no watchdog was needed.
      expect(['rolled-back', 'failed'], r.stdout + r.stderr).toContain(finished.status);
      expect(`${finished.error}`).toMatch(/the connection was lost while applying|the host loaded the old ruleset again by itself/);
      expect(r.events.filter((e) => e.event === 'watchdog')).toEqual([]);
      expect(await sha()).toBe(before);
      await noTimer(sb, h);
    }, 180_000);
  },
  PRIVATE,
);
