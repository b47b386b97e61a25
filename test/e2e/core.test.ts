/**
 * The walking skeleton, proven over real SSH against throwaway Debian hosts. Host state is
 * always checked with the plain OpenSSH client, never with hostsmith's own transport.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeEach, expect, it } from 'vitest';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { sshOk, sshRun } from '../hosts/ssh.js';
import { fixture, hostsmith, journalText, onlyJsonLines, sandboxArgs, stepEvents } from './cli.js';

/** Path, content hash, mode, owner and group of everything under the given paths. */
const SNAPSHOT = (paths: string) =>
  `for p in ${paths}; do if [ -e "$p" ]; then find "$p" -xdev \\( -type f -printf '%p %m %u %g ' -exec sh -c 'sha256sum < "$1" | cut -c1-16' _ {} \\; \\) -o \\( ! -type f -printf '%p %m %u %g %y\\n' \\); else echo "$p absent"; fi; done | sort`;

const SITE = `name: site
vars:
  server_name: { default: example.com }
  port: { default: 8080, type: number }
steps:
  - name: App dir
    file: { path: /srv/app, state: directory, mode: "0750" }
  - name: Site config
    template: { src: site.conf.hbs, dest: "/srv/app/{{server_name}}.conf", mode: "0640" }
  - name: Motd line
    file: { path: /etc/motd, content: "managed by hostsmith for {{server_name}}\\n" }
  - name: Stamp
    command: { run: "echo stamped > /srv/app/stamp", creates: /srv/app/stamp, rollback: "rm -f /srv/app/stamp" }
`;
const SITE_TEMPLATE = `server {
  server_name {{server_name}};
  listen {{port}};
  # on {{facts.hostname}} ({{facts.os.id}} {{facts.os.version_id}})
}
`;

describeHosts('core: plan, apply, idempotence, rollback over SSH', () => {
  const sandbox = useSandbox(2);
  let state: string;
  beforeEach(() => {
    state = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
  });
  const args = (...a: string[]) => [...a, ...sandboxArgs(sandbox(), state)];

  it('plan shows diffs and changes nothing on the host', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const dir = fixture({ 'site.yml': SITE, 'templates/site.conf.hbs': SITE_TEMPLATE });
    const before = await sshOk(sb, h, SNAPSHOT('/srv /etc /var/lib/hostsmith /root'));
    const r = await hostsmith(args('plan', join(dir, 'site.yml'), '--hosts', h.name, '--json'));
    expect(r.code, r.stderr).toBe(0);
    expect(onlyJsonLines(r)).toBe(r.events.length);
    const steps = stepEvents(r);
    expect(steps.map((e) => [e.step, e.status])).toEqual([
      ['App dir', 'planned'],
      ['Site config', 'planned'],
      ['Motd line', 'planned'],
      ['Stamp', 'planned'],
    ]);
    expect(steps[1]!.diff).toContain(`+  # on ${h.name} (debian 12)`);
    expect(steps[2]!.diff).toMatch(/^-.*Debian GNU\/Linux/m);
    expect(await sshOk(sb, h, SNAPSHOT('/srv /etc /var/lib/hostsmith /root'))).toBe(before);
    expect(journalText(state)).toBe('');
  });

  it('apply makes the state; a second apply changes nothing', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const dir = fixture({ 'site.yml': SITE, 'templates/site.conf.hbs': SITE_TEMPLATE });
    const r1 = await hostsmith(args('apply', join(dir, 'site.yml'), '--hosts', h.name, '--yes', '--json', '--var', 'server_name=shop.test'));
    expect(r1.code, r1.stderr + r1.stdout).toBe(0);
    expect(stepEvents(r1).every((e) => e.status === 'changed')).toBe(true);
    expect(await sshOk(sb, h, 'stat -c "%a %U %G" /srv/app /srv/app/shop.test.conf')).toBe('750 root root\n640 root root\n');
    expect(await sshOk(sb, h, 'cat /srv/app/shop.test.conf')).toBe(
      SITE_TEMPLATE.replace(/{{server_name}}/, 'shop.test')
        .replace('{{port}}', '8080')
        .replace('{{facts.hostname}}', h.name)
        .replace('{{facts.os.id}} {{facts.os.version_id}}', 'debian 12'),
    );
    expect(await sshOk(sb, h, 'cat /etc/motd /srv/app/stamp')).toBe('managed by hostsmith for shop.test\nstamped\n');

    const r2 = await hostsmith(args('apply', join(dir, 'site.yml'), '--hosts', h.name, '--yes', '--json', '--var', 'server_name=shop.test'));
    expect(r2.code).toBe(0);
    expect(stepEvents(r2).map((e) => e.status)).toEqual(['unchanged', 'unchanged', 'unchanged', 'unchanged']);
    const fin = r2.events.find((e) => e.event === 'run-finished')!;
    expect(fin.hosts[h.name]).toMatchObject({ status: 'ok', changed: 0, unchanged: 4 });
    // The journal knows how to reach the host again, and keeps rendered content by fingerprint only.
    const entries = journalText(state)
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(entries.find((e) => e.kind === 'host-started').target).toMatchObject({ host: h.address, port: h.port, user: 'root', kind: 'ssh' });
    const tpl = entries.find((e) => e.kind === 'step-started' && e.step === 'Site config');
    expect(tpl.params).toMatchObject({ dest: '/srv/app/shop.test.conf', rendered: expect.stringMatching(/^sha256:[0-9a-f]{64} \(\d+ bytes\)$/) });
    expect(tpl.undo).toMatchObject({ kind: 'absent', path: '/srv/app/shop.test.conf' });
    expect(tpl.pre).toMatch(/^[0-9a-f]{64}$/);
    expect(entries.find((e) => e.kind === 'step-finished' && e.step === 'Site config').post).toMatch(/^[0-9a-f]{64}$/);
  });

  it('a failure at step k puts every touched file back exactly (content, mode, owner) and exits 1', async () => {
    const sb = sandbox();
    const h = sb.hosts[1]!;
    await sb.restart(h, { wipe: true });
    await sshOk(
      sb,
      h,
      'mkdir -p /etc/app && printf "old\\n" > /etc/app/main.conf && chmod 0604 /etc/app/main.conf && chown nobody:nogroup /etc/app/main.conf && printf "keep\\n" > /etc/app/other.conf && chmod 0600 /etc/app/other.conf',
    );
    const recipe = `name: fails
steps:
  - name: Replace main
    file: { path: /etc/app/main.conf, content: "new\\n", mode: "0644", owner: root, group: root }
  - name: Only mode
    file: { path: /etc/app/other.conf, content: "keep\\n", mode: "0640" }
  - name: New tree
    file: { path: /opt/new/deep/file.txt, content: "x" }
  - name: New dir
    file: { path: /var/new-dir, state: directory }
  - name: Remove motd
    file: { path: /etc/motd, state: absent }
  - name: Breaks
    command: { run: "echo 'disk on fire' >&2; exit 42" }
  - name: Never runs
    file: { path: /etc/never, content: "x" }
`;
    const dir = fixture({ 'r.yml': recipe });
    const watched = '/etc/app /etc/motd /etc/never /opt /var/new-dir';
    const before = await sshOk(sb, h, SNAPSHOT(watched));
    const r = await hostsmith(args('apply', join(dir, 'r.yml'), '--hosts', h.name, '--yes', '--json'));
    expect(r.code, r.stderr).toBe(1);
    expect(onlyJsonLines(r)).toBe(r.events.length);
    expect(await sshOk(sb, h, SNAPSHOT(watched))).toBe(before);
    const failed = stepEvents(r).find((e) => e.status === 'failed')!;
    expect(failed).toMatchObject({ step: 'Breaks', type: 'command' });
    expect(failed.error).toContain('disk on fire');
    expect(r.events.filter((e) => e.event === 'rollback-finished').map((e) => [e.step, e.status])).toEqual([
      ['Remove motd', 'rolled-back'],
      ['New dir', 'rolled-back'],
      ['New tree', 'rolled-back'],
      ['Only mode', 'rolled-back'],
      ['Replace main', 'rolled-back'],
    ]);
    expect(r.events.at(-1)).toMatchObject({ event: 'run-finished', status: 'rolled-back', exitCode: 1 });
    // Backups of replaced files are kept on the host, readable by root only.
    const runId = r.events[0]!.runId;
    expect(await sshOk(sb, h, `stat -c %a /var/lib/hostsmith/backups /var/lib/hostsmith/backups/${runId}`)).toBe('700\n700\n');
    expect(await sshOk(sb, h, `cat /var/lib/hostsmith/backups/${runId}/Replace_main-6e60ca45/etc/app/main.conf`)).toBe('old\n');
  });

  it('a failed rollback is reported, the other rollbacks still run, exit 3', async () => {
    const sb = sandbox();
    const h = sb.hosts[1]!;
    const dir = fixture({
      'r.yml': `name: badrollback
steps:
  - name: First file
    file: { path: /root/rb-first, content: "1" }
  - name: Bad undo
    command: { run: "touch /root/rb-cmd", rollback: "echo 'cannot undo' >&2; exit 5" }
  - name: Second file
    file: { path: /root/rb-second, content: "2" }
  - name: Breaks
    command: { run: "false" }
`,
    });
    const r = await hostsmith(args('apply', join(dir, 'r.yml'), '--hosts', h.name, '--yes', '--json'));
    expect(r.code).toBe(3);
    const rb = r.events.filter((e) => e.event === 'rollback-finished');
    expect(rb.map((e) => [e.step, e.status])).toEqual([
      ['Second file', 'rolled-back'],
      ['Bad undo', 'rollback-failed'],
      ['First file', 'rolled-back'],
    ]);
    expect(rb[1]!.error).toContain('cannot undo');
    expect((await sshRun(sb, h, 'ls /root/rb-first /root/rb-second')).code).not.toBe(0);
    expect(await sshOk(sb, h, 'ls /root/rb-cmd')).toContain('rb-cmd');
    expect(r.events.find((e) => e.event === 'host-finished')).toMatchObject({ status: 'rollback-incomplete', rolledBack: 2 });
    // The journal says what is left.
    const show = await hostsmith(['show', r.events[0]!.runId, '--state-dir', state]);
    expect(show.stdout).toMatch(/Bad undo: rollback-failed — .*cannot undo/);
  });

  it('an invalid recipe exits 2 with file:line:col and opens no connection', async () => {
    let connections = 0;
    const server = createServer((s) => {
      connections++;
      s.destroy();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    try {
      const dir = fixture({
        'bad.yml': `name: bad
steps:
  - name: One
    file: { path: /etc/x, mode: "0999" }
  - name: One
    command: { run: "true", bogus: 1 }
`,
      });
      const r = await hostsmith(['apply', join(dir, 'bad.yml'), '--hosts', `root@127.0.0.1:${port}`, '--yes', '--state-dir', state]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`${join(dir, 'bad.yml')}:4:`);
      expect(r.stderr).toMatch(/bad\.yml:5:\d+: .*duplicate/i);
      expect(r.stderr).toMatch(/bad\.yml:6:\d+: .*bogus/);
      expect(connections).toBe(0);
      // Options count as input too: a missing key file is exit 2, before any connection.
      writeFileSync(join(dir, 'good.yml'), 'name: good\nsteps:\n  - name: T\n    command: { run: "true" }\n');
      const noKey = await hostsmith(['plan', join(dir, 'good.yml'), '--hosts', `root@127.0.0.1:${port}`, '--identity', join(dir, 'no-such-key'), '--state-dir', state]);
      expect(noKey.code).toBe(2);
      expect(noKey.stderr).toContain('--identity: no such key file');
      expect(connections).toBe(0);
    } finally {
      server.close();
    }
  });

  it('an unknown host key exits 4; --accept-new-host-keys records it; a changed key is refused', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const dir = fixture({ 'r.yml': `name: keys\nsteps:\n  - name: Touch\n    command: { run: "touch /root/key-test" }\n`, known_hosts: '' });
    const kh = join(dir, 'known_hosts');
    const base = ['apply', join(dir, 'r.yml'), '--hosts', h.name, '-i', sb.inventoryPath, '--known-hosts', kh, '--state-dir', state, '--yes'];
    const r1 = await hostsmith(base);
    expect(r1.code).toBe(4);
    expect(r1.stderr + r1.stdout).toMatch(/unknown host key for \[127\.0\.0\.\d+\]:\d+/);
    expect((await sshRun(sb, h, 'test -e /root/key-test')).code).toBe(1);

    const r2 = await hostsmith([...base, '--accept-new-host-keys']);
    expect(r2.code, r2.stderr + r2.stdout).toBe(0);
    expect(readFileSync(kh, 'utf8')).toContain(`[${h.address}]:${h.port} ssh-ed25519 `);

    // Same name, different key: refused even with --accept-new-host-keys.
    const real = readFileSync(kh, 'utf8');
    const other = readFileSync(sb.knownHostsPath, 'utf8')
      .split('\n')
      .find((l) => l.startsWith(`[${sb.hosts[1]!.address}]`))!
      .split(' ')
      .slice(1)
      .join(' ');
    writeFileSync(kh, `[${h.address}]:${h.port} ${other}\n`);
    const r3 = await hostsmith([...base, '--accept-new-host-keys']);
    expect(r3.code).toBe(4);
    expect(r3.stderr + r3.stdout).toContain('HOST KEY CHANGED');
    expect(real).not.toBe(readFileSync(kh, 'utf8'));
  });

  it('a secret var appears nowhere: not in output, plan file or journal', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const secret = `pa$$-W0'rd"quoted`;
    const dir = fixture({
      'r.yml': `name: secrets
vars:
  db_password: { required: true, secret: true }
steps:
  - name: Config with secret
    file: { path: /root/db.conf, content: "password={{db_password}}\\n", mode: "0600" }
  - name: Command with secret
    command: { run: "echo using {{quote db_password}} && printf %s {{quote db_password}} > /root/db.pw", rollback: "rm -f /root/db.pw" }
  - name: Fails
    command: { run: "echo {{quote db_password}} >&2; exit 1" }
`,
    });
    const planOut = join(dir, 'plan.json');
    const p = await hostsmith(args('plan', join(dir, 'r.yml'), '--hosts', h.name, '--var', `db_password=${secret}`, '--out', planOut));
    const pj = await hostsmith(args('plan', join(dir, 'r.yml'), '--hosts', h.name, '--var', `db_password=${secret}`, '--json'));
    const a = await hostsmith(args('apply', join(dir, 'r.yml'), '--hosts', h.name, '--var', `db_password=${secret}`, '--yes', '--json', '--verbose'));
    const a2 = await hostsmith(args('apply', join(dir, 'r.yml'), '--hosts', h.name, '--var', `db_password=${secret}`, '--yes'));
    expect(p.code).toBe(0);
    expect(a.code).toBe(1);
    const everything = [p, pj, a, a2].map((r) => r.stdout + r.stderr).join('\n') + readFileSync(planOut, 'utf8') + journalText(state);
    expect(everything).toContain('***');
    expect(everything).not.toContain(secret);
    expect(everything).not.toContain(JSON.stringify(secret).slice(1, -1));
    expect(everything).not.toContain(`W0'\\''rd`); // as the quote helper writes it into a command
    // The summary's error line quotes the failing command: masked too.
    expect(a2.stdout).toMatch(/step "Fails" failed: command "echo \*\*\* >&2; exit 1"/);
    // A diff of secret-bearing content is not shown at all: the old content may hold an old secret.
    const conf = stepEvents(pj).find((e) => e.step === 'Config with secret')!;
    expect(conf.diff).toBe('(diff hidden: the content holds secret values)\n');
    expect(journalText(state).length).toBeGreaterThan(100);
  });

  it('a second run on a locked host fails fast with a clear message', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const dir = fixture({ 'slow.yml': `name: slow\nsteps:\n  - name: Wait\n    command: { run: "sleep 10" }\n` });
    const first = hostsmith(args('apply', join(dir, 'slow.yml'), '--hosts', h.name, '--yes'));
    // Wait until the first run holds the lock.
    for (let i = 0; i < 50 && (await sshRun(sb, h, 'test -d /run/hostsmith/lock')).code !== 0; i++) await new Promise((r) => setTimeout(r, 100));
    const t0 = Date.now();
    const second = await hostsmith(args('apply', join(dir, 'slow.yml'), '--hosts', h.name, '--yes'));
    const took = Date.now() - t0;
    expect(second.code).not.toBe(0);
    expect(second.stdout + second.stderr).toMatch(/locked by another hostsmith run \(run=\S+ controller=/);
    expect(took).toBeLessThan(5000);
    // The lock is the host's, not the login's: another user (without sudo) meets it too.
    const other = await hostsmith([
      'apply',
      join(dir, 'slow.yml'),
      '--hosts',
      `nosudo@${h.address}:${h.port}`,
      '--identity',
      sb.keyPath,
      '--known-hosts',
      sb.knownHostsPath,
      '--state-dir',
      state,
      '--yes',
    ]);
    expect(other.code).toBe(1);
    expect(other.stdout + other.stderr).toMatch(/locked by another hostsmith run \(run=/);
    expect((await first).code).toBe(0);
    expect((await sshRun(sb, h, 'test -e /run/hostsmith/lock')).code).toBe(1);
  });

  it('runs on several hosts; an unreachable one exits 4 while the others succeed', async () => {
    const sb = sandbox();
    const dir = fixture({ 'r.yml': `name: multi\nsteps:\n  - name: Mark\n    file: { path: /root/multi, content: "{{facts.hostname}}\\n" }\n` });
    const r = await hostsmith(args('apply', join(dir, 'r.yml'), '--hosts', `h1,h2,root@127.0.0.1:1`, '--identity', sb.keyPath, '--yes', '--json'));
    expect(r.code).toBe(4);
    const fin = r.events.find((e) => e.event === 'run-finished')!;
    expect(fin.hosts).toMatchObject({ h1: { status: 'ok', changed: 1 }, h2: { status: 'ok', changed: 1 }, 'root@127.0.0.1:1': { status: 'unreachable' } });
    expect(await sshOk(sb, sb.hosts[0]!, 'cat /root/multi')).toBe('h1\n');
    expect(await sshOk(sb, sb.hosts[1]!, 'cat /root/multi')).toBe('h2\n');
    const unreachable = r.events.find((e) => e.event === 'host-finished' && e.status === 'unreachable')!;
    expect(unreachable.error).toMatch(/connection refused at 127\.0\.0\.1:1/);
  });

  it('Ctrl-C stops after the step in flight, rolls back and exits 130', async () => {
    const sb = sandbox();
    const h = sb.hosts[1]!;
    const dir = fixture({
      'r.yml': `name: interrupt
steps:
  - name: Before
    file: { path: /root/int-before, content: "x" }
  - name: Slow
    command: { run: "touch /root/int-slow-started; sleep 3; touch /root/int-slow", rollback: "rm -f /root/int-slow /root/int-slow-started" }
  - name: After
    file: { path: /root/int-after, content: "x" }
`,
    });
    const r = await hostsmith(args('apply', join(dir, 'r.yml'), '--hosts', h.name, '--yes', '--json'), {
      onSpawn: (child) => {
        let sent = false;
        const poll = setInterval(async () => {
          if (!sent && (await sshRun(sb, h, 'test -e /root/int-slow-started')).code === 0 && !sent) {
            sent = true;
            clearInterval(poll);
            child.kill('SIGINT');
          }
        }, 200);
      },
    });
    expect(r.code, r.stdout + r.stderr).toBe(130);
    expect(stepEvents(r).map((e) => [e.step, e.status])).toEqual([
      ['Before', 'changed'],
      ['Slow', 'changed'],
    ]);
    expect((await sshRun(sb, h, 'ls /root/int-before /root/int-slow /root/int-slow-started /root/int-after')).stdout).toBe('');
    expect(r.events.at(-1)).toMatchObject({ event: 'run-finished', status: 'interrupted', exitCode: 130 });
  });

  it('history and show read past runs from the journal', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const dir = fixture({ 'r.yml': `name: hist\nsteps:\n  - name: Touch\n    file: { path: /root/hist, content: "x" }\n` });
    const a = await hostsmith(args('apply', join(dir, 'r.yml'), '--hosts', h.name, '--yes', '--json'));
    expect(a.code).toBe(0);
    const runId = a.events[0]!.runId;
    const hist = await hostsmith(['history', '--state-dir', state, '--json']);
    expect(hist.events[0]).toMatchObject({ runId, recipe: 'hist', hosts: [h.name], status: 'ok', changed: 1 });
    const show = await hostsmith(['show', runId, '--state-dir', state]);
    expect(show.stdout).toContain(`${h.name}  Touch [file]  changed: create /root/hist`);
    const missing = await hostsmith(['show', 'no-such-run', '--state-dir', state]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('no run "no-such-run"');
  });

  it('--concurrency 1 runs hosts one after the other; every connection is closed afterwards', async () => {
    const sb = sandbox();
    const dir = fixture({ 'r.yml': `name: serial\nsteps:\n  - name: Wait\n    command: { run: "sleep 0.5" }\n` });
    const r = await hostsmith(args('apply', join(dir, 'r.yml'), '--hosts', 'h1,h2', '--concurrency', '1', '--yes', '--json'));
    expect(r.code).toBe(0);
    const order = r.events.filter((e) => e.event === 'host-connected' || e.event === 'host-finished').map((e) => `${e.event}:${e.host}`);
    expect(order).toEqual(['host-connected:h1', 'host-finished:h1', 'host-connected:h2', 'host-finished:h2']);
    // Only our own checking session is left on each host: hostsmith closed its connection.
    for (const h of sb.hosts) expect(await sshOk(sb, h, "ps -eo args | grep -c '^sshd: root@notty$'")).toBe('1\n');
    const bad = await hostsmith(args('plan', join(dir, 'r.yml'), '--hosts', 'h1', '--concurrency', 'many'));
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--concurrency: "many" is not a whole number');
  });

  it('a second Ctrl-C stops the rollback and leaves the run open in the journal (exit 3)', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const dir = fixture({
      'r.yml': `name: twice
steps:
  - name: Made
    file: { path: /root/twice-made, content: "x" }
  - name: Slow
    command: { run: "touch /root/twice-started; sleep 2", rollback: "sleep 2; rm -f /root/twice-started" }
`,
    });
    let sent = 0;
    const r = await hostsmith(args('apply', join(dir, 'r.yml'), '--hosts', h.name, '--yes', '--json'), {
      onSpawn: (child) => {
        const poll = setInterval(async () => {
          if (sent === 0 && (await sshRun(sb, h, 'test -e /root/twice-started')).code === 0 && sent === 0) {
            sent = 1;
            child.kill('SIGINT');
            setTimeout(() => child.kill('SIGINT'), 2500);
            clearInterval(poll);
          }
        }, 150);
      },
    });
    expect(r.code, r.stdout + r.stderr).toBe(3);
    const journal = journalText(state);
    expect(journal).toContain('"kind":"rollback-started"');
    expect(journal).not.toContain('"kind":"run-finished"');
    expect(r.stderr).toMatch(/stopping the rollback. What was not rolled back is listed by `hostsmith show/);
    // The newest step was rolled back; the oldest is left, and the journal says so.
    expect(await sshOk(sb, h, 'ls /root/twice-made')).toBe('/root/twice-made\n');
  });

  it('reaches a host through a ProxyJump from ~/.ssh/config', async () => {
    const sb = sandbox();
    const [jump, target] = sb.hosts as [(typeof sb.hosts)[0], (typeof sb.hosts)[0]];
    const home = fixture({
      '.ssh/config': `Host inner\n  HostName ${target!.address}\n  Port ${target!.port}\n  User root\n  IdentityFile ${sb.keyPath}\n  ProxyJump root@${jump!.address}:${jump!.port}\n`,
    });
    const dir = fixture({ 'r.yml': `name: jump\nsteps:\n  - name: Mark\n    file: { path: /root/jumped, content: "{{facts.hostname}}\\n" }\n` });
    const r = await hostsmith(['apply', join(dir, 'r.yml'), '--hosts', 'inner', '--identity', sb.keyPath, '--known-hosts', sb.knownHostsPath, '--state-dir', state, '--yes'], { env: { HOME: home } });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(await sshOk(sb, target!, 'cat /root/jumped')).toBe(`${target!.name}\n`);
    expect((await sshRun(sb, jump!, 'test -e /root/jumped')).code).toBe(1);
    // Proof that the jump is really used: through a jump host that is down, the target is unreachable.
    writeFileSync(join(home, '.ssh/config'), readFileSync(join(home, '.ssh/config'), 'utf8').replace(/ProxyJump .*/, 'ProxyJump root@127.0.0.1:1'));
    const down = await hostsmith(['apply', join(dir, 'r.yml'), '--hosts', 'inner', '--identity', sb.keyPath, '--known-hosts', sb.knownHostsPath, '--state-dir', state, '--yes'], {
      env: { HOME: home },
    });
    expect(down.code).toBe(4);
    expect(down.stdout + down.stderr).toContain('connection refused at 127.0.0.1:1');
  });

  it('authenticates through ssh-agent when no key file is given, and says so when there is nothing to offer', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const home = fixture({ '.keep': '' });
    const sock = join(home, 'agent.sock');
    const agent = spawn('ssh-agent', ['-D', '-a', sock], { stdio: 'ignore' });
    try {
      for (let i = 0; i < 50 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
      const added = spawnSync('ssh-add', [sb.keyPath], { env: { ...process.env, SSH_AUTH_SOCK: sock }, encoding: 'utf8' });
      expect(added.status, added.stderr).toBe(0);
      const dir = fixture({ 'r.yml': `name: agent\nsteps:\n  - name: Mark\n    file: { path: /root/agent, content: "x" }\n` });
      const base = ['apply', join(dir, 'r.yml'), '--hosts', `root@${h.address}:${h.port}`, '--known-hosts', sb.knownHostsPath, '--state-dir', state, '--yes'];
      const viaAgent = await hostsmith(base, { env: { HOME: home, SSH_AUTH_SOCK: sock } });
      expect(viaAgent.code, viaAgent.stdout + viaAgent.stderr).toBe(0);
      expect(await sshOk(sb, h, 'cat /root/agent')).toBe('x');
      const nothing = await hostsmith(base, { env: { HOME: home, SSH_AUTH_SOCK: '' } });
      expect(nothing.code).toBe(4);
      expect(nothing.stdout + nothing.stderr).toContain('no SSH credentials to offer');
    } finally {
      agent.kill();
    }
  });

  it('a connection lost mid-run is made again and the run rolled back (exit 1), the lock released', async () => {
    const sb = sandbox();
    const h = sb.hosts[1]!;
    const dir = fixture({
      'r.yml': `name: lost
steps:
  - name: Made
    file: { path: /root/lost-made, content: "x" }
  - name: Cut the line
    command: { run: "pkill -9 -f 'sshd: root@notty'; sleep 2", rollback: "true" }
`,
    });
    const r = await hostsmith(args('apply', join(dir, 'r.yml'), '--hosts', h.name, '--yes', '--json'));
    expect(r.code, r.stdout + r.stderr).toBe(1);
    const fin = r.events.find((e) => e.event === 'host-finished')!;
    expect(fin.status).toBe('rolled-back');
    expect(fin.error).toMatch(/the connection was lost while applying \(the SSH connection was lost while a command ran/);
    expect((await sshRun(sb, h, 'test -e /root/lost-made')).code).toBe(1);
    expect((await sshRun(sb, h, 'test -e /run/hostsmith/lock')).code).toBe(1);
  });
});
