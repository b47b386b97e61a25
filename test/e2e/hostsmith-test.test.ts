/**
 * `hostsmith test` on real sandbox hosts it starts itself (every example recipe holding at every
 * stage is in examples.test.ts): recipes with a planted defect fail at the stage that should catch it, naming the step and
 * the paths left behind.
 */
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { stopSandbox } from '../hosts/hosts.js';
import { sshRun } from '../hosts/ssh.js';
import { run } from '../hosts/util.js';
import { fixture, hostsmith, ROOT, sandboxArgs } from './cli.js';

type Ev = Record<string, any>;
const stages = (events: Ev[]) => events.filter((e) => e.event === 'test-stage');
const stage = (events: Ev[], name: string, step?: string) => stages(events).find((e) => e.stage === name && (step === undefined || e.step === step));

describeHosts('hostsmith test', () => {
  it('fails a step that changes on every run at idempotence, and a rollback that leaves a file at rollback and undo, naming steps and paths', async () => {
    const dir = fixture({
      'defects.yml': [
        'name: defects',
        'steps:',
        '  - name: Base folder',
        '    file: { path: /srv/defect, state: directory, mode: "0755" }',
        '  - name: Leaky command',
        // Its rollback forgets the second file it makes.
        '    command: { run: "echo a > /srv/defect/a; echo b > /srv/defect/b", creates: /srv/defect/a, rollback: "rm -f /srv/defect/a" }',
        '  - name: Always changes',
        '    command: { run: "date +%N > /srv/defect/stamp", rollback: "rm -f /srv/defect/stamp" }',
        // A daemon its rollback never stops: a process no file records.
        '  - name: Stray daemon',
        '    command: { run: "setsid tail -f /dev/null </dev/null >/dev/null 2>&1 & touch /srv/defect-daemon", creates: /srv/defect-daemon, rollback: "rm -f /srv/defect-daemon" }',
        '',
      ].join('\n'),
    });
    const r = await hostsmith(['test', join(dir, 'defects.yml'), '--json', '--only', 'idempotence,undo,rollback']);
    expect(r.code, r.stderr + r.stdout).toBe(1);
    expect(stage(r.events, 'idempotence')).toMatchObject({ ok: false, changed: ['Always changes'] });
    const undo = stage(r.events, 'undo');
    expect(undo?.ok).toBe(false);
    expect(undo?.residue?.join('\n')).toMatch(/\/srv\/defect\b/);
    expect(undo?.residue).toContain('live: process tail is new');
    expect(undo?.residue?.join('\n')).not.toMatch(/defect-daemon/);
    // Before the leaky step nothing is left; from it on, its file is.
    expect(stage(r.events, 'rollback', 'Base folder')).toMatchObject({ ok: true });
    for (const step of ['Leaky command', 'Always changes', 'Stray daemon']) {
      const s = stage(r.events, 'rollback', step);
      expect(s?.ok, step).toBe(false);
      expect(s?.residue?.join('\n'), step).toMatch(/\/srv\/defect/);
    }
    // Idempotence needs a converged host, so its converge is reported too.
    expect(stage(r.events, 'converge')).toMatchObject({ ok: true });
    expect(r.events.at(-1)).toMatchObject({ event: 'test-finished', ok: false });
  });

  // motd's journal on a fresh host: 1 run-started, 2-3 host-started, 4-13 a step-started and a
  // step-finished for each of its four steps and its handler, 14 host-finished (ok), 15 run-finished.
  it.each([
    ['8', /killed right after its journal entry 8; recover left zero residue/],
    ['14', /killed right after its journal entry 14, after the run had finished on the host; recover left its work whole/],
  ])('recover: killed after journal entry %s, the host ends as before the run or, once the run had finished there, whole', async (n, said) => {
    const r = await hostsmith(['test', join(ROOT, 'recipes/motd.yml'), '--only', 'recover'], { env: { HOSTSMITH_TEST_KILL_AT_WRITE: n } });
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toMatch(said);
  });

  it('fails verify when a verify: command does not hold after converge; --keep keeps that host and says how to reach it', async () => {
    const dir = fixture({
      'verified.yml': ['name: verified', 'steps:', '  - name: Marker', '    file: { path: /srv/verified.txt, content: "hi\\n" }', 'verify:', '  - test -f /srv/not-made-by-the-recipe', ''].join('\n'),
    });
    const r = await hostsmith(['test', join(dir, 'verified.yml'), '--only', 'converge,verify', '--keep']);
    const kept = /Kept for inspection \(the sandbox stays up until: npm run sandbox -- down --dir (\S+)\):\n {2}(ssh .*)/.exec(r.stdout);
    try {
      expect(r.code, r.stderr + r.stdout).toBe(1);
      expect(r.stdout).toMatch(/✓ converge: applied on a fresh host: 1 changed/);
      expect(r.stdout).toMatch(/✗ verify: the verify commands did not hold[^\n]*not-made-by-the-recipe/);
      expect(kept, r.stdout).not.toBeNull();
      // The printed command reaches the kept host, as a person would type it.
      const [cmd, ...args] = `${kept![2]} -o BatchMode=yes hostname`.split(' ');
      const ssh = await run(cmd!, args);
      expect(ssh.stdout.trim(), ssh.stderr).toMatch(/^h\d+$/);
    } finally {
      if (kept) await stopSandbox(kept[1]!);
    }
  });

  it('a required secret given with --var reaches every run that needs it: the saved plan and the undo', async () => {
    const dir = fixture({
      'sec.yml': [
        'name: sec',
        'vars:',
        '  token: { required: true, secret: true }',
        'steps:',
        '  - name: Token file',
        '    file: { path: /srv/sec.conf, content: "token={{token}}\\n", mode: "0600" }',
        '',
      ].join('\n'),
    });
    const r = await hostsmith(['test', join(dir, 'sec.yml'), '--only', 'plan,undo', '--var', 'token=s3cr3t-value']);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toMatch(/✓ plan: a plan saved on a fresh host applied exactly \(1 change\(s\)\)/);
    expect(r.stdout).toMatch(/✓ undo: undo of the converge run left zero residue/);
    expect(r.stdout + r.stderr).not.toContain('s3cr3t-value');
  });

  it('a path the recipe lists under test.ignore is churn, not residue', async () => {
    const steps = ['steps:', '  - name: Cache', '    command: { run: "mkdir -p /var/lib/churn && date +%N > /var/lib/churn/x", rollback: "true" }', ''];
    const dir = fixture({
      'churn.yml': ['name: churn', ...steps].join('\n'),
      'ignored.yml': ['name: ignored', 'test: { ignore: [/var/lib/churn] }', ...steps].join('\n'),
    });
    const noted = await hostsmith(['test', join(dir, 'churn.yml'), '--only', 'rollback']);
    expect(noted.code, noted.stdout).toBe(1);
    expect(noted.stdout).toMatch(/left: \/var\/lib\/churn: added/);
    const ignored = await hostsmith(['test', join(dir, 'ignored.yml'), '--only', 'rollback']);
    expect(ignored.code, ignored.stdout).toBe(0);
    expect(ignored.stdout).toMatch(/✓ rollback after "Cache": 1 step\(s\) rolled back, zero residue/);
  });
});

describeHosts(
  'hostsmith test on systemd hosts',
  () => {
    it('a recipe with a systemd unit gets booted systemd hosts, and its unit rolls back to zero residue', async () => {
      const dir = fixture({
        'unit.yml': [
          'name: sleeper',
          'steps:',
          '  - name: Sleeper service',
          '    systemd_unit:',
          '      name: sleeper.service',
          '      content: "[Unit]\\nDescription=Sleeps\\n\\n[Service]\\nExecStart=/bin/sleep infinity\\n\\n[Install]\\nWantedBy=multi-user.target\\n"',
          '      enabled: true',
          '      state: started',
          '  - name: Marker',
          '    file: { path: /etc/sleeper.conf, content: "x=1\\n" }',
          '',
        ].join('\n'),
      });
      const r = await hostsmith(['test', join(dir, 'unit.yml'), '--only', 'converge,idempotence,rollback']);
      expect(r.code, r.stderr + r.stdout).toBe(0);
      expect(r.stdout).toMatch(/on throwaway systemd hosts/);
      expect(r.stdout).toMatch(/✓ rollback after "Marker": 2 step\(s\) rolled back, zero residue/);
    });

    // Found with a recipe of every common type: what systemd does by itself when a package pulls
    // in network-online.target, hostnamectl wakes hostnamed, or a purged package leaves its
    // timer's stamp is not the recipe's residue.
    it('on a systemd host, what systemd does by itself is not residue: a reached target, an on-demand service, a timer stamp', async () => {
      const dir = fixture({
        'sd.yml': [
          'name: sd-churn',
          'steps:',
          '  - name: Packages',
          '    package: { install: [nginx-light, logrotate] }',
          '  - name: Name',
          '    hostname: { name: churn1 }',
          '  - name: Zone',
          '    timezone: { name: Europe/Berlin }',
          '',
        ].join('\n'),
      });
      const r = await hostsmith(['test', join(dir, 'sd.yml'), '--json', '--only', 'undo', '--kind', 'systemd']);
      expect(r.code, r.stderr + r.stdout).toBe(0);
      expect(stage(r.events, 'undo')).toMatchObject({ ok: true, detail: 'undo of the converge run left zero residue' });
    });

    // What no file records: each command below undoes its file and forgets what it made live.
    it('live state a rollback forgot is residue: a firewall table, a net.* sysctl, a kernel setting, a unit left running', async () => {
      const leak = (name: string, run: string) => [
        `  - name: ${name}`,
        `    command: { run: "${run} && touch /etc/leak-${name.toLowerCase().replace(/ /g, '-')}", creates: /etc/leak-${name.toLowerCase().replace(/ /g, '-')}, rollback: "rm -f /etc/leak-${name.toLowerCase().replace(/ /g, '-')}" }`,
      ];
      const dir = fixture({
        'live.yml': [
          'name: live-leaks',
          'steps:',
          // A firewall that lets everything in, set and undone by its own step.
          '  - name: Open firewall',
          '    firewall: { table: { family: inet, name: open }, content: "chain input {\\n  type filter hook input priority 0; policy accept;\\n}\\n" }',
          ...leak('Stray table', 'nft add table inet stray'),
          ...leak('Stray sysctl', 'sysctl -qw net.ipv4.tcp_fin_timeout=17'),
          ...leak('Stray unit', 'systemd-run --quiet --unit=stray /bin/sleep infinity'),
          // A kernel setting outside net.*: the host has its own copy, since a step names it. (The
          // step comes after the leak: had it come first, the leak would be a later change to
          // what it read, which undo refuses as drift.)
          ...leak('Stray kernel setting', 'sysctl -qw vm.dirty_ratio=33'),
          '  - name: Dirty ratio at boot',
          '    sysctl: { name: vm.dirty_ratio, value: "15", apply_live: false }',
          '',
        ].join('\n'),
      });
      const r = await hostsmith(['test', join(dir, 'live.yml'), '--json', '--only', 'undo', '--kind', 'systemd']);
      expect(r.code, r.stderr + r.stdout).toBe(1);
      expect(r.events[0]).toMatchObject({ event: 'test-started', kind: 'systemd', net: 'private' });
      const undo = stage(r.events, 'undo');
      expect(undo?.ok).toBe(false);
      // The files came back; the live state did not, and only that is named. The firewall the
      // recipe set through its own step was undone, live too.
      const machine = readFileSync('/proc/sys/vm/dirty_ratio', 'utf8').trim();
      expect(undo?.residue).toEqual([
        'live: firewall inet stray is new',
        'live: sysctl net.ipv4.tcp_fin_timeout was 60, now 17',
        `live: sysctl vm.dirty_ratio was ${machine}, now 33`,
        'live: unit stray.service (active running) is new',
      ]);
      // The copy was the host's: this machine's kernel kept its value.
      expect(machine).not.toBe('33');
    });
  },
  { kind: 'systemd' },
);

describeHosts('typed recipes on a real host', () => {
  const sandbox = useSandbox(1);

  it('recipes/motd.ts and its YAML twin make the same plan on a host, step by step', async () => {
    const sb = sandbox();
    const state = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
    const plan = async (file: string) => {
      const r = await hostsmith(['plan', file, '--hosts', 'h1', '--json', ...sandboxArgs(sb, state)]);
      expect(r.code, r.stderr).toBe(0);
      return r.events.filter((e) => e.event === 'step-finished').map(({ time: _t, runId: _r, durationMs: _d, ...rest }) => rest);
    };
    const ts = await plan('recipes/motd.ts');
    expect(ts.map((e) => `${e.step}:${e.status}`)).toEqual(['App folder:planned', 'Message of the day:planned', 'App config:planned', 'Install stamp:planned', 'Record config change:planned']);
    expect(ts).toEqual(await plan('recipes/motd.yml'));
  });
});

describeHosts('hostsmith test on hosts you name', () => {
  const sandbox = useSandbox(1);
  const target = () => {
    const sb = sandbox();
    return ['-i', sb.inventoryPath, '--known-hosts', sb.knownHostsPath, '--hosts', 'h1'];
  };

  it('runs the stages one after another on the named host, judges it by reading it, and leaves it as it found it', async () => {
    const sb = sandbox();
    // The typed twin of motd.yml: hostsmith test loads a .ts recipe directly.
    const r = await hostsmith(['test', 'recipes/motd.ts', '--only', 'undo,rollback,recover', ...target()], { env: { HOSTSMITH_TEST_KILL_AT_WRITE: '8' } });
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toMatch(/on h1, one stage after another/);
    expect(r.stdout).toMatch(/residue is judged by reading them through the recipe's own reads/);
    expect(r.stdout).toMatch(/✓ undo: undo of the converge run left the hosts as a plan saw them before it/);
    expect(r.stdout).toMatch(/✓ rollback after "Install stamp": 4 step\(s\) rolled back, the hosts read as before the run/);
    expect(r.stdout).toMatch(/✓ recover: killed right after its journal entry 8; recover left the hosts read as before the run/);
    // Read with plain ssh: the recipe's folder is gone again.
    expect((await sshRun(sb, sb.hosts[0]!, 'test -e /opt/hostsmith-demo; echo $?')).stdout.trim()).toBe('1');
  });

  it('a rollback that leaves something is named by the step a plan now reads differently, and the later jobs are not run', async () => {
    const dir = fixture({
      'leaky.yml': [
        'name: leaky',
        'steps:',
        '  - name: Base folder',
        '    file: { path: /srv/leaky, state: directory, mode: "0755" }',
        '  - name: Leaky command',
        '    command: { run: "echo a > /srv/leaky/a; echo b > /srv/leaky/b", creates: /srv/leaky/a, rollback: "rm -f /srv/leaky/a" }',
        '',
      ].join('\n'),
    });
    const r = await hostsmith(['test', join(dir, 'leaky.yml'), '--only', 'rollback,recover', ...target()]);
    expect(r.code, r.stderr + r.stdout).toBe(1);
    expect(r.stdout).toMatch(/✓ rollback after "Base folder"/);
    expect(r.stdout).toMatch(/✗ rollback after "Leaky command"[\s\S]*left: h1 step "Base folder": a plan said "create" before the run, "unchanged" after it/);
    expect(r.stdout).toMatch(/The other 1 job\(s\) were not run/);
    expect(r.stdout).not.toMatch(/recover:/);
  });
});

describeHosts('hostsmith test: what a sandbox host may do', () => {
  it('a kernel setting outside net.* is the host’s own to change, and comes back on rollback; this machine’s kernel is untouched', async () => {
    const machine = () => ['vm/swappiness', 'fs/file-max'].map((k) => readFileSync(`/proc/sys/${k}`, 'utf8').trim());
    const before = machine();
    const dir = fixture({
      'kernel.yml': [
        'name: kernel',
        'steps:',
        '  - name: Less swapping',
        `    sysctl: { name: vm.swappiness, value: "${before[0] === '7' ? '8' : '7'}" }`,
        '  - name: More files',
        `    sysctl: { name: fs.file-max, value: "${Number(before[1]) + 1}" }`,
        '',
      ].join('\n'),
    });
    const r = await hostsmith(['test', join(dir, 'kernel.yml'), '--only', 'converge,idempotence,undo,rollback']);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toMatch(/✓ converge: applied on a fresh host: 2 changed/);
    expect(r.stdout).toMatch(/✓ rollback after "More files": 2 step\(s\) rolled back, zero residue/);
    expect(machine()).toEqual(before);
  });

  it('a recipe that restarts ssh after editing its config holds: the host’s sshd is a daemon, as on a server', async () => {
    const dir = fixture({
      'ssh.yml': [
        'name: ssh-restart',
        'steps:',
        '  - name: No X11',
        '    line: { path: /etc/ssh/sshd_config, line: "X11Forwarding no", match: "^#?X11Forwarding" }',
        '    notify: [Restart ssh]',
        'handlers:',
        '  - name: Restart ssh',
        '    service: { name: ssh, state: restarted }',
        '',
      ].join('\n'),
    });
    // Before sshd was a daemon there, the restart ended the host, and converge lost it.
    const r = await hostsmith(['test', join(dir, 'ssh.yml'), '--json', '--only', 'idempotence,undo']);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(stage(r.events, 'converge')).toMatchObject({ ok: true, detail: 'applied on a fresh host: 1 changed, 0 unchanged' });
    expect(stage(r.events, 'undo')?.ok).toBe(true);
  });
});

describe('hostsmith test: bad input', () => {
  it('an unknown stage is exit 2 before any host starts', async () => {
    const r = await hostsmith(['test', join(ROOT, 'recipes/motd.yml'), '--only', 'converge,bogus']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--only converge,bogus: "bogus" is not a stage \(stages: converge, verify/);
  });

  it('a network that is neither shared nor private is exit 2, from the flag or from the recipe', async () => {
    const flag = await hostsmith(['test', join(ROOT, 'recipes/motd.yml'), '--net', 'public']);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toMatch(/--net public: a sandbox host's network is shared or private/);
    const dir = fixture({ 'n.yml': 'name: n\ntest: { net: public }\nsteps:\n  - name: A\n    file: { path: /srv/a, content: "a" }\n' });
    const recipe = await hostsmith(['test', join(dir, 'n.yml')]);
    expect(recipe.code).toBe(2);
    expect(recipe.stderr).toMatch(/n\.yml:2:\d+: .*net/);
  });

  it('a firewall on this machine’s network is refused before any host starts: it would be this machine’s firewall', async () => {
    const dir = fixture({
      'fw.yml': 'name: fw\nsteps:\n  - name: Closed\n    firewall: { table: { family: inet, name: t }, content: "chain input {\\n  type filter hook input priority 0; policy drop;\\n}\\n" }\n',
    });
    const r = await hostsmith(['test', join(dir, 'fw.yml'), '--net', 'shared']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/step "Closed" sets a firewall, and on this machine's network \(--net shared\) that would be this machine's firewall; .*Nothing was started/);
    expect(r.stdout).not.toMatch(/Testing/);
  });
});
