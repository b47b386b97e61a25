/**
 * `reboot` on a booted systemd host (systemd-nspawn: `systemctl reboot` really restarts it, with a
 * new boot id, in a few seconds). Checked with plain ssh, the host's boot id and the sandbox's own
 * boot log on this machine, never through hostsmith. The step battery is built for changes that
 * can be taken back with zero residue, which a reboot is not, so its checks are written here:
 * apply across the reboot (the later step runs on the new boot), a plan that reboots nothing,
 * only_if_needed, a failing later step rolled back across the reboot, undo, a controller killed
 * during the wait and recover, lockout protection after a reboot (confirmed, and the watchdog
 * rolling back across it alone), a reboot handler not run again after a rollback, a host that does
 * not come back in time; and on the plain sandbox kind (no init system), a clear refusal, not a hang.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, expect, it } from 'vitest';
import type { Sandbox, SandboxHost } from '../hosts/hosts.js';
import { sshOk, sshRun } from '../hosts/ssh.js';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { fixture, hostsmith, sandboxArgs, stepEvents, type CliResult } from './cli.js';

const SYSTEMD = { kind: 'systemd' as const };
const all = (r: CliResult) => r.stdout + r.stderr;
const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));
const BOOT_ID = 'cat /proc/sys/kernel/random/boot_id';

/** How many times the sandbox saw the host reboot (its boot script's log, on this machine). */
const reboots = (h: SandboxHost): number => (readFileSync(join(h.dir, 'sshd.log'), 'utf8').match(/\] [0-9TZ:.-]+ rebooting$/gm) ?? []).length;

/** Waits (plain ssh) until the host runs a boot other than `before` and has settled; returns its boot id. */
async function newBoot(sb: Sandbox, h: SandboxHost, before: string, ms = 120_000): Promise<string> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    const r = await sshRun(sb, h, `systemctl is-system-running --wait >/dev/null 2>&1; ${BOOT_ID}`);
    if (r.code === 0 && r.stdout.trim() && r.stdout.trim() !== before) return r.stdout.trim();
    await sleep(250);
  }
  throw new Error(`${h.name} did not come back with a new boot within ${ms} ms`);
}

function journalOf(state: string, runId: string): Array<Record<string, any>> {
  return readFileSync(join(state, 'runs', `${runId}.ndjson`), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, any>);
}

const runIdOf = (r: CliResult): string => r.events.find((e) => e.event === 'run-started')?.runId ?? '';

describeHosts(
  'reboot on a booted systemd host',
  () => {
    const sandbox = useSandbox(1, SYSTEMD);
    const host = () => sandbox().hosts[0]!;
    const boot = async () => (await sshOk(sandbox(), host(), BOOT_ID)).trim();
    let dir: string;
    let state: string;
    const args = () => [...sandboxArgs(sandbox(), state), '--hosts', host().name];
    const recipe = (name: string) => join(dir, `${name}.yml`);

    beforeAll(() => {
      dir = fixture({
        // /run is a tmpfs: what the After step writes there survives only if it ran on the new boot.
        'across.yml': `name: across
steps:
  - name: First
    file: { path: /srv/rb/first, content: "first\\n" }
  - name: Reboot
    reboot: { timeout: 2m, message: "hostsmith test reboot" }
  - name: After
    file: { path: /run/rb/after, content: "after\\n" }
`,
        'needed.yml': `name: needed
steps:
  - name: Reboot if needed
    reboot: { only_if_needed: true }
`,
        'fails.yml': `name: fails
steps:
  - name: First
    file: { path: /srv/rbf/first, content: "first\\n" }
  - name: Reboot
    reboot: {}
  - name: Second
    file: { path: /srv/rbf/second, content: "second\\n" }
  - name: Breaks
    command: { run: "echo broken >&2; exit 7" }
`,
        'undo.yml': `name: undone
steps:
  - name: First
    file: { path: /srv/rbu/first, content: "first\\n" }
  - name: Reboot
    reboot: {}
  - name: Second
    file: { path: /srv/rbu/second, content: "second\\n" }
`,
        'killed.yml': `name: killed
steps:
  - name: First
    file: { path: /srv/rbk/first, content: "first\\n" }
  - name: Reboot
    reboot: {}
  - name: After
    file: { path: /srv/rbk/after, content: "after\\n" }
`,
        'confirm.yml': `name: confirmed
verify:
  - test -f /srv/rbc/after
steps:
  - name: First
    file: { path: /srv/rbc/first, content: "first\\n" }
  - name: Reboot
    reboot: {}
  - name: After
    file: { path: /srv/rbc/after, content: "after\\n" }
`,
        'handler.yml': `name: handled
verify:
  - "false"
steps:
  - name: Kernel args
    file: { path: /srv/rbhd/args, content: "quiet\\n" }
    notify: [Reboot]
handlers:
  - name: Reboot
    reboot: {}
`,
        'watchdog.yml': `name: watched
verify:
  - "true"
steps:
  - name: First
    file: { path: /srv/rbw/first, content: "first\\n" }
  - name: Reboot
    reboot: {}
  - name: After
    file: { path: /srv/rbw/after, content: "after\\n" }
`,
        'held.yml': `name: held
steps:
  - name: First
    file: { path: /srv/rbh/first, content: "first\\n" }
  - name: Reboot
    reboot: { timeout: 6 }
  - name: After
    file: { path: /srv/rbh/after, content: "after\\n" }
`,
        'state/runs/.keep': '',
      });
      state = join(dir, 'state');
    });

    it('a dry run only says it would reboot the host', async () => {
      const before = await boot();
      const n = reboots(host());
      const r = await hostsmith(['plan', recipe('across'), ...args()]);
      expect(r.code, all(r)).toBe(0);
      expect(r.stdout).toContain(`Reboot  will change: reboot ${host().name} (systemctl reboot), then wait up to 120 s for a new boot; a rollback of later steps will not undo the reboot`);
      // /run/rb/after is under what a boot starts afresh: known after apply.
      expect(r.stdout).toMatch(/\? After +known after apply \(it reads what Reboot may change\)/);
      await sleep(3000);
      expect(await boot()).toBe(before);
      expect(reboots(host())).toBe(n);
    });

    it('a file step, the reboot and a file step all apply; the later one runs on the new boot', async () => {
      // The sandbox's journal does not outlive a boot: a logger in front of the real one keeps what it was told.
      await sshOk(sandbox(), host(), `printf '#!/bin/sh\\nprintf "%%s\\\\n" "$*" >> /srv/rb-logged\\nexec /usr/bin/logger "$@"\\n' > /usr/local/bin/logger && chmod 755 /usr/local/bin/logger`);
      const before = await boot();
      const n = reboots(host());
      const r = await hostsmith(['apply', recipe('across'), ...args(), '--yes', '--json']);
      expect(r.code, all(r)).toBe(0);
      expect(stepEvents(r).map((e) => [e.step, e.status])).toEqual([
        ['First', 'changed'],
        ['Reboot', 'changed'],
        ['After', 'changed'],
      ]);
      const after = await boot();
      expect(after).not.toBe(before);
      expect(reboots(host())).toBe(n + 1);
      expect(stepEvents(r).find((e) => e.step === 'Reboot')?.summary).toMatch(
        new RegExp(`^rebooted ${host().name} \\(systemctl reboot at \\S+; back after \\d+ s, boot ${before.slice(0, 8)}… → ${after.slice(0, 8)}…\\)$`),
      );
      // /srv is kept across the boot; /run is new, so After wrote its file on the new boot.
      expect(await sshOk(sandbox(), host(), 'cat /srv/rb/first /run/rb/after')).toBe('first\nafter\n');
      // The message went to the host's log before it rebooted.
      expect(await sshOk(sandbox(), host(), 'cat /srv/rb-logged; rm -f /srv/rb-logged /usr/local/bin/logger')).toBe('-t hostsmith -- hostsmith test reboot\n');
      // The journal: the boot before, written before the reboot; the new one after it.
      const j = journalOf(state, runIdOf(r));
      expect(j.find((e) => e.kind === 'step-started' && e.step === 'Reboot')?.undo).toEqual({ kind: 'reboot', bootBefore: before });
      expect(j.find((e) => e.kind === 'step-finished' && e.step === 'Reboot')?.undo).toMatchObject({ kind: 'reboot', bootBefore: before, bootAfter: after });
      // The run's lock went with the old boot's /run; it was taken again on the new one, and released.
      expect((await sshRun(sandbox(), host(), 'test -e /run/hostsmith/lock')).code).toBe(1);
      expect(await sshOk(sandbox(), host(), 'cat /run/hostsmith/last')).toContain(`run=${runIdOf(r)} `);
    });

    it('only_if_needed: skipped while the host does not ask for a reboot; once it does, rebooted once, then skipped again', async () => {
      const before = await boot();
      const n = reboots(host());
      const skip = await hostsmith(['apply', recipe('needed'), ...args(), '--yes', '--json']);
      expect(skip.code, all(skip)).toBe(0);
      expect(stepEvents(skip)[0]).toMatchObject({ status: 'skipped', summary: `no reboot needed: /var/run/reboot-required does not exist on ${host().name}` });
      expect(await boot()).toBe(before);

      await sshOk(sandbox(), host(), 'echo "*** System restart required ***" > /var/run/reboot-required; echo linux-image-amd64 > /var/run/reboot-required.pkgs');
      const plan = await hostsmith(['plan', recipe('needed'), ...args()]);
      expect(plan.stdout).toContain('/var/run/reboot-required asks for it (linux-image-amd64)');
      const go = await hostsmith(['apply', recipe('needed'), ...args(), '--yes', '--json']);
      expect(go.code, all(go)).toBe(0);
      expect(stepEvents(go)[0]).toMatchObject({ status: 'changed' });
      const after = await boot();
      expect(after).not.toBe(before);
      expect(reboots(host())).toBe(n + 1);

      // The marker lived in /run: gone with the boot, so a rerun does nothing.
      const again = await hostsmith(['apply', recipe('needed'), ...args(), '--yes', '--json']);
      expect(again.code, all(again)).toBe(0);
      expect(stepEvents(again)[0]).toMatchObject({ status: 'skipped' });
      expect(await boot()).toBe(after);
      expect(reboots(host())).toBe(n + 1);
    });

    it('a later step that fails: the file steps are rolled back, and the output says the reboot was not undone', async () => {
      const before = await boot();
      const r = await hostsmith(['apply', recipe('fails'), ...args(), '--yes']);
      expect(r.code, all(r)).toBe(1);
      expect(all(r)).toMatch(/rollback of Second: rolled back/);
      expect(all(r)).toMatch(/rollback of Reboot: nothing to roll back; the host was rebooted at \S+ \(boot [0-9a-f]{8}… → [0-9a-f]{8}…\)/);
      expect(all(r)).toMatch(/rollback of First: rolled back/);
      expect(all(r)).toMatch(new RegExp(`${host().name}: not undone by the rollback: Reboot: nothing to roll back; the host was rebooted at`));
      expect(await boot()).not.toBe(before);
      expect((await sshRun(sandbox(), host(), 'test -e /srv/rbf')).code).toBe(1);
      const runId = /run (\S+)\)/.exec(r.stdout)?.[1] ?? '';
      const j = journalOf(state, runId);
      expect(j.filter((e) => e.kind === 'rollback-finished').map((e) => [e.step, e.status, e.note ?? ''])).toEqual([
        ['Second', 'rolled-back', ''],
        ['Reboot', 'rolled-back', expect.stringMatching(/^nothing to roll back; the host was rebooted at /)],
        ['First', 'rolled-back', ''],
      ]);
      const show = await hostsmith(['show', runId, '--state-dir', state]);
      expect(show.stdout).toMatch(/↺ Reboot: rolled-back — nothing to roll back; the host was rebooted at/);
    });

    it('undo of a run with a reboot says so and takes back the other steps, even after the host rebooted again', async () => {
      const r = await hostsmith(['apply', recipe('undo'), ...args(), '--yes', '--json']);
      expect(r.code, all(r)).toBe(0);
      // Rebooted again since, by hand: no drift for a reboot, and no second reboot by undo.
      const before = await boot();
      await sshRun(sandbox(), host(), 'systemctl reboot');
      const now = await newBoot(sandbox(), host(), before);
      const n = reboots(host());
      const u = await hostsmith(['undo', runIdOf(r), '--yes', '--state-dir', state]);
      expect(u.code, all(u)).toBe(0);
      expect(u.stdout).toMatch(/Reboot \[reboot\]: nothing to roll back: a reboot cannot be undone \(the host was rebooted at \S+\)/);
      expect(u.stdout).toMatch(/Reboot: rolled-back — nothing to roll back; the host was rebooted at/);
      expect((await sshRun(sandbox(), host(), 'test -e /srv/rbu')).code).toBe(1);
      await sleep(2000);
      expect(await boot()).toBe(now);
      expect(reboots(host())).toBe(n);
    });

    it('the controller killed during the wait: the journal says the reboot started; recover does not reboot again and rolls back the rest', async () => {
      const before = await boot();
      const n = reboots(host());
      const known = new Set(readdirSync(join(state, 'runs')));
      let child: import('node:child_process').ChildProcess | undefined;
      const run = hostsmith(['apply', recipe('killed'), ...args(), '--yes'], { onSpawn: (c) => (child = c) });
      // Once the sandbox sees the host go down, the controller is waiting for it.
      for (let i = 0; i < 600 && reboots(host()) === n; i++) await sleep(50);
      expect(reboots(host())).toBe(n + 1);
      child!.kill('SIGKILL');
      await run;
      const runId = readdirSync(join(state, 'runs'))
        .find((f) => !known.has(f))!
        .replace(/\.ndjson$/, '');
      const j = journalOf(state, runId);
      expect(j.filter((e) => e.kind === 'step-started').map((e) => e.step)).toEqual(['First', 'Reboot']);
      expect(j.find((e) => e.kind === 'step-started' && e.step === 'Reboot')?.undo).toEqual({ kind: 'reboot', bootBefore: before });
      expect(j.some((e) => e.kind === 'step-finished' && e.step === 'Reboot')).toBe(false);

      const after = await newBoot(sandbox(), host(), before);
      const r = await hostsmith(['recover', runId, '--yes', '--state-dir', state]);
      expect(r.code, all(r)).toBe(0);
      expect(all(r)).toContain(`rollback of Reboot: nothing to roll back; the host was rebooted during the run (boot ${before.slice(0, 8)}… → ${after.slice(0, 8)}…)`);
      expect(all(r)).toMatch(/rollback of First: rolled back/);
      expect((await sshRun(sandbox(), host(), 'test -e /srv/rbk')).code).toBe(1);
      await sleep(2000);
      expect(await boot()).toBe(after);
      expect(reboots(host())).toBe(n + 1);
      expect(journalOf(state, runId).at(-1)).toMatchObject({ kind: 'run-finished', status: 'recovered' });
    });

    it('--confirm: the watchdog is armed on the new boot after the reboot, and confirmed over a new login', async () => {
      const before = await boot();
      const r = await hostsmith(['apply', recipe('confirm'), ...args(), '--yes', '--json', '--confirm', '60s']);
      expect(r.code, all(r)).toBe(0);
      expect(await boot()).not.toBe(before);
      expect(r.events.filter((e) => e.event === 'watchdog').map((e) => e.what)).toEqual(['armed', 'confirmed']);
      expect(await sshOk(sandbox(), host(), 'ls /srv/rbc; ls -A /var/lib/hostsmith/watchdog 2>/dev/null | wc -l')).toBe('after\nfirst\n0\n');
      await sshOk(sandbox(), host(), 'rm -rf /srv/rbc');
    });

    it('as a handler: rebooted once; a rollback (verify fails) takes back the file and does not reboot again', async () => {
      const before = await boot();
      const n = reboots(host());
      const r = await hostsmith(['apply', recipe('handler'), ...args(), '--yes', '--confirm', '30s']);
      expect(r.code, all(r)).toBe(1);
      expect(all(r)).toMatch(/Reboot +changed: rebooted /);
      expect(all(r)).toMatch(/rollback of Reboot: nothing to roll back; the host was rebooted at /);
      expect(all(r)).toMatch(/rollback of Kernel args: rolled back/);
      expect(all(r)).toContain('Reboot  skipped: after rollback: not needed: a reboot is not run again after a rollback');
      await sleep(2000);
      expect(reboots(host())).toBe(n + 1);
      expect(await boot()).not.toBe(before);
      expect((await sshRun(sandbox(), host(), 'test -e /srv/rbhd')).code).toBe(1);
    });

    it('the watchdog, armed on the new boot, rolls back across the reboot by itself when the controller dies; recover records it', async () => {
      const known = new Set(readdirSync(join(state, 'runs')));
      const n = reboots(host());
      const r = await hostsmith(['apply', recipe('watchdog'), ...args(), '--yes', '--confirm', '3s'], { env: { HOSTSMITH_FAULT_KILL_AFTER_ARM: '1' } });
      // Killed by its own SIGKILL right after arming (the helper reports a signal as -1).
      expect(r.code, all(r)).toBe(-1);
      expect(all(r)).toMatch(/Reboot +changed: rebooted [\s\S]*watchdog armed/);
      const runId = readdirSync(join(state, 'runs'))
        .find((f) => !known.has(f))!
        .replace(/\.ndjson$/, '');
      let result = '';
      for (let i = 0; i < 100 && !result.includes('rolled-back'); i++) {
        await sleep(200);
        result = (await sshRun(sandbox(), host(), 'cat /var/lib/hostsmith/watchdog/*/result 2>/dev/null')).stdout;
      }
      expect(result.trim()).toBe('rolled-back');
      expect(await sshOk(sandbox(), host(), 'cat /var/lib/hostsmith/watchdog/*/log')).toContain('reboot: nothing to roll back; the host was rebooted during the run');
      expect((await sshRun(sandbox(), host(), 'test -e /srv/rbw')).code).toBe(1);
      const rec = await hostsmith(['recover', runId, '--yes', '--state-dir', state]);
      expect(rec.code, all(rec)).toBe(0);
      expect(all(rec)).toMatch(/rollback of Reboot: rolled back/);
      expect(reboots(host())).toBe(n + 1);
    });

    it('a host that does not come back in time: the run gives it up naming the host, the time waited and what to check, rolls nothing back over the dead link, and recover finishes once it is back', async () => {
      // The next boot holds sshd back for 25 s, once: longer than the step's 6 s.
      await sshOk(
        sandbox(),
        host(),
        `mkdir -p /etc/systemd/system/ssh.service.d && printf '[Service]\\nExecStartPre=/bin/sh -c "if [ -e /etc/hs-hold ]; then rm -f /etc/hs-hold; sleep 25; fi"\\n' > /etc/systemd/system/ssh.service.d/hold.conf && touch /etc/hs-hold && systemctl daemon-reload`,
      );
      const before = await boot();
      const started = Date.now();
      const r = await hostsmith(['apply', recipe('held'), ...args(), '--yes'], { env: { HOSTSMITH_RECONNECT_SECONDS: '60' } });
      // Given up when the step's time is up, not after another reconnect budget.
      expect(Date.now() - started).toBeLessThan(25_000);
      expect(r.code, all(r)).toBe(4);
      expect(all(r)).toMatch(
        new RegExp(
          `${host().name}: LINK LOST — given up: did not come back within [67] s after systemctl reboot at \\S+ \\(last try: .*\\)\\. Check on its console whether it booted and sshd started`,
        ),
      );
      expect(all(r)).toMatch(/hostsmith recover \S+/);
      expect(all(r)).not.toMatch(/rollback of/);
      const runId = /run (\S+)\)/.exec(r.stdout)?.[1] ?? '';
      const j = journalOf(state, runId);
      expect(j.some((e) => e.kind === 'rollback-started')).toBe(false);
      expect(j.some((e) => e.kind === 'run-finished')).toBe(false);

      const after = await newBoot(sandbox(), host(), before);
      await sshOk(sandbox(), host(), 'rm -rf /etc/systemd/system/ssh.service.d && systemctl daemon-reload');
      expect(await sshOk(sandbox(), host(), 'cat /srv/rbh/first; test ! -e /srv/rbh/after && echo no-after')).toBe('first\nno-after\n');
      const rec = await hostsmith(['recover', runId, '--yes', '--state-dir', state]);
      expect(rec.code, all(rec)).toBe(0);
      expect(all(rec)).toMatch(/rollback of Reboot: nothing to roll back; the host was rebooted during the run/);
      expect((await sshRun(sandbox(), host(), 'test -e /srv/rbh')).code).toBe(1);
      expect(await boot()).toBe(after);
    });
  },
  SYSTEMD,
);

describeHosts('reboot on a host with no init system (tini)', () => {
  const sandbox = useSandbox(1);
  it('is refused at plan and at apply with a clear message, at once, changing nothing', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const dir = fixture({
      'r.yml': `name: noinit
steps:
  - name: First
    file: { path: /srv/rbn/first, content: "first\\n" }
  - name: Reboot
    reboot: { timeout: 10m }
`,
      'state/runs/.keep': '',
    });
    const before = await sshOk(sb, h, BOOT_ID);
    const args = [...sandboxArgs(sb, join(dir, 'state')), '--hosts', h.name];
    const plan = await hostsmith(['plan', join(dir, 'r.yml'), ...args]);
    expect(plan.code, all(plan)).toBe(1);
    expect(all(plan)).toContain(`${h.name} cannot be rebooted: its PID 1 is tini, not systemd or an init that shutdown -r restarts`);
    const started = Date.now();
    const r = await hostsmith(['apply', join(dir, 'r.yml'), ...args, '--yes']);
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(r.code, all(r)).toBe(1);
    expect(all(r)).toContain(`${h.name} cannot be rebooted: its PID 1 is tini`);
    expect(all(r)).toMatch(/rollback of First: rolled back/);
    expect((await sshRun(sb, h, 'test -e /srv/rbn')).code).toBe(1);
    expect(await sshOk(sb, h, BOOT_ID)).toBe(before);
  });
});
