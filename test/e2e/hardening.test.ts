/**
 * Exit codes that never lie, on real hosts: the controller's disk filling mid-run, and a NUL
 * byte reaching a command. The host is snapshotted with plain OpenSSH before and after.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { sshOk } from '../hosts/ssh.js';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { fixture, hostsmith } from './cli.js';

const SNAPSHOT = `{ find /srv /etc/hardening* /var/lib/hostsmith -xdev -printf '%p %m %u %g %y %s\\n' 2>/dev/null; find /srv -xdev -type f -exec sha256sum {} + 2>/dev/null; ls -d /run/hostsmith/lock 2>/dev/null; } | sort`;

const filler = 'x'.repeat(1500);
const FULL = `name: full
vars:
  filler: { default: "${filler}" }
steps:
${Array.from({ length: 12 }, (_, i) => `  - name: File ${i + 1}\n    file: { path: /srv/full/f${i + 1}, content: "${i + 1} {{filler}}\\n" }`).join('\n')}
`;

const NUL = `name: nul
steps:
  - name: Before
    file: { path: /srv/nul/before, content: "x\\n" }
  - name: Emit
    command: { run: "printf 'a\\\\000b'", rollback: "true" }
  - name: Use
    command: { run: "echo '{{steps.Emit.stdout}}' > /srv/nul/after" }
`;

const RELOAD = `name: reload
steps:
  - name: Site config
    template: { src: site.conf.hbs, dest: /srv/reload/site.conf }
    notify: [Reload site, Check site]
handlers:
  - name: Reload site
    command: { run: "mkdir -p /var/tmp/reload && cat /srv/reload/site.conf >> /var/tmp/reload/calls", rollback: "true" }
  - name: Check site
    command: { run: "exit 7" }
`;

describeHosts('exit codes that never lie', () => {
  const sandbox = useSandbox(1);
  const common = () => ['-i', sandbox().inventoryPath, '--known-hosts', sandbox().knownHostsPath, '--hosts', 'h1'];

  it('the controller disk fills mid-run: the run stops before the change it cannot journal, rolls back, and says so (exit 3)', async () => {
    const sb = sandbox();
    const [h1] = sb.hosts;
    const dir = fixture({ 'full.yml': FULL });
    const state = join(dir, 'state');
    mkdirSync(state);
    // 16 KiB: the run's first entries fit, a few steps' worth of journal more do not.
    const mount = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=16k', 'tmpfs', state]);
    expect(mount.status, mount.stderr.toString()).toBe(0);
    try {
      const before = await sshOk(sb, h1!, SNAPSHOT);
      const r = await hostsmith(['apply', join(dir, 'full.yml'), '--yes', '--json', '--state-dir', state, ...common()]);
      expect(r.code, r.stderr + r.stdout).toBe(3);
      const steps = r.events.filter((e) => e.event === 'step-finished');
      const changed = steps.filter((e) => e.status === 'changed').length;
      // Some steps were made (the journal had room for them), and not all twelve.
      expect(changed).toBeGreaterThan(0);
      expect(changed).toBeLessThan(12);
      const failed = steps.find((e) => e.status === 'failed')!;
      expect(failed.error).toMatch(/cannot write the journal .*no space left on device/i);
      // Every completed step was rolled back on the host, each saying its record could not be written.
      // Where the disk fills decides whether the last step made had its step-finished written: if
      // not, it is reported failed (journal error), yet it was made, so it is rolled back too.
      const rollbacks = r.events.filter((e) => e.event === 'rollback-finished');
      expect(rollbacks.length).toBeGreaterThanOrEqual(changed);
      expect(rollbacks.length).toBeLessThanOrEqual(changed + 1);
      for (const rb of rollbacks) expect(rb.error).toMatch(/rolled back on the host, but the journal could not record it/);
      const host = r.events.find((e) => e.event === 'host-finished')!;
      expect(host.status).toBe('rollback-incomplete');
      expect(host.error).toMatch(/the journal could not be written, so the run stopped before the next change/);
      // What the host holds: exactly what it held before — every change that was made is undone.
      expect(await sshOk(sb, h1!, SNAPSHOT)).toBe(before);
      // The journal that is there still parses, line by line (no torn line runs into the next).
      const runs = readdirSync(join(state, 'runs'));
      for (const line of readFileSync(join(state, 'runs', runs[0]!), 'utf8').split('\n')) {
        if (line.trim()) {
          try {
            JSON.parse(line);
          } catch {
            // a torn last write may remain as a line of its own; nothing may follow it on that line
            expect(line.length).toBeLessThan(16 * 1024);
          }
        }
      }
    } finally {
      spawnSync('umount', [state]);
    }
  });

  it('a handler that ran for a template now rolled back runs again after the rollback, so the service loads what was put back', async () => {
    const sb = sandbox();
    const [h1] = sb.hosts;
    const dir = fixture({ 'reload.yml': RELOAD, 'templates/site.conf.hbs': 'listen {{facts.hostname}}:8080\n' });
    await sshOk(sb, h1!, 'mkdir -p /srv/reload && echo "listen old" > /srv/reload/site.conf && rm -rf /var/tmp/reload');
    try {
      const r = await hostsmith(['apply', join(dir, 'reload.yml'), '--yes', '--json', '--state-dir', join(dir, 'state'), ...common()]);
      expect(r.code, r.stderr + r.stdout).toBe(1);
      // Each call recorded on the host: once with the new config, once more with the old one put back.
      expect(await sshOk(sb, h1!, 'cat /var/tmp/reload/calls')).toBe('listen h1:8080\nlisten old\n');
      expect(await sshOk(sb, h1!, 'cat /srv/reload/site.conf')).toBe('listen old\n');
      const reloads = r.events.filter((e) => e.event === 'step-finished' && e.step === 'Reload site');
      expect(reloads.map((e) => e.status)).toEqual(['changed', 'changed']);
      expect(reloads[1]!.summary).toMatch(/^after rollback: /);
      const show = await hostsmith(['show', r.events[0]!.runId, '--json', '--state-dir', join(dir, 'state')]);
      // The run is rolled back, and the handler's second run is nothing to undo.
      const state = show.events.find((e) => e.event === 'run-state')!;
      expect(state.hosts.h1.status).toBe('rolled-back');
      expect(state.hosts.h1.left).toEqual([]);
    } finally {
      await sshOk(sb, h1!, 'rm -rf /srv/reload /var/tmp/reload');
    }
  });

  it('a NUL byte that would reach a command is refused before anything is sent: the step fails and the run rolls back (exit 1)', async () => {
    const sb = sandbox();
    const [h1] = sb.hosts;
    const dir = fixture({ 'nul.yml': NUL });
    const before = await sshOk(sb, h1!, SNAPSHOT);
    const r = await hostsmith(['apply', join(dir, 'nul.yml'), '--yes', '--json', '--state-dir', join(dir, 'state'), ...common()]);
    expect(r.code, r.stderr + r.stdout).toBe(1);
    const use = r.events.find((e) => e.event === 'step-finished' && e.step === 'Use')!;
    expect(use.status).toBe('failed');
    expect(use.error).toMatch(/NUL byte.*nothing was sent to the host/);
    expect(r.events.filter((e) => e.event === 'rollback-finished').map((e) => `${e.step}:${e.status}`)).toEqual(['Emit:rolled-back', 'Before:rolled-back']);
    expect(r.events.find((e) => e.event === 'host-finished')!.status).toBe('rolled-back');
    // Rolled back, lock released: the host is as it was.
    expect(await sshOk(sb, h1!, SNAPSHOT)).toBe(before);
  });
});
