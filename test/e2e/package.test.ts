/**
 * The `package` step against real Debian hosts. Package state is read with plain ssh
 * (dpkg-query, apt-mark), never through hostsmith.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeEach, expect, it } from 'vitest';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { sshOk, sshRun } from '../hosts/ssh.js';
import { fixture, hostsmith, journalText, sandboxArgs, stepEvents } from './cli.js';

const DPKG = `dpkg-query -W -f='\${Package} \${Version} \${Status}\\n' | sort`;
/**
 * Every package dpkg lists with version and status, every entry of its status database (which also
 * holds packages selected but not installed, that dpkg-query -W leaves out), then apt's auto marks.
 */
const PACKAGES = `${DPKG}; echo '--- status db'; awk '/^Package:/ { p = $2 } /^Status:/ { print p, $2, $3, $4 }' /var/lib/dpkg/status | sort; echo '--- auto'; apt-mark showauto`;
const status = (pkgs: string) => `for p in ${pkgs}; do dpkg-query -W -f='\${Package} \${Status}\\n' $p 2>/dev/null || echo "$p unknown"; done`;

describeHosts('package step (apt) on real hosts', () => {
  const sandbox = useSandbox(1);
  let state: string;
  beforeEach(async () => {
    state = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
    await sandbox().restart(sandbox().hosts[0]!, { wipe: true });
  });
  const args = (...a: string[]) => [...a, ...sandboxArgs(sandbox(), state)];
  const recipe = (steps: string) => join(fixture({ 'r.yml': `name: pkg\nsteps:\n${steps}` }), 'r.yml');

  it('plan lists exactly the packages apt would install, dependencies included, and changes nothing', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const before = await sshOk(sb, h, PACKAGES);
    const r = await hostsmith(args('plan', recipe('  - name: Tools\n    package: { install: [hello, jq] }\n'), '--hosts', h.name, '--json'));
    expect(r.code, r.stderr).toBe(0);
    const [step] = stepEvents(r);
    expect(step).toMatchObject({ status: 'planned', summary: 'install hello, jq + dependencies libjq1, libonig5', irreversible: false });
    expect(step!.diff).toMatch(/^\+hello 2\.10-\S+$/m);
    expect(step!.diff).toMatch(/^\+libonig5 \S+$/m);
    expect(await sshOk(sb, h, PACKAGES)).toBe(before);
  });

  it("plan writes nothing on the host: no apt cache, no planner log, with the host's lists or temporary ones", async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    // A removal makes the dry run read apt's auto marks too.
    await sshOk(sb, h, 'DEBIAN_FRONTEND=noninteractive apt-get install -y -q sl >/dev/null && rm -f /var/cache/apt/*.bin /var/log/apt/eipp.log.xz');
    const marker = '/tmp/hostsmith-plan-marker';
    // Everything modified after the marker; /tmp holds only the plan's documented private scratch lists.
    const changedSince = `find / -xdev \\( -path /proc -o -path /tmp -o -path /run -o -path /dev \\) -prune -o -newer ${marker} -print`;
    await sshOk(sb, h, `touch ${marker} && sleep 1`);
    const r1 = await hostsmith(args('plan', recipe('  - name: Tools\n    package: { install: [hello, jq], remove: [sl] }\n'), '--hosts', h.name, '--json'));
    expect(r1.code, r1.stderr).toBe(0);
    expect(stepEvents(r1)[0]).toMatchObject({ status: 'planned', summary: 'install hello, jq + dependencies libjq1, libonig5; remove sl' });
    expect(await sshOk(sb, h, changedSince)).toBe('');

    // Without lists, the dry run downloads temporary ones: still nothing outside its scratch folder.
    await sshOk(sb, h, `rm -rf /var/lib/apt/lists/* && touch ${marker} && sleep 1`);
    const r2 = await hostsmith(args('plan', recipe('  - name: Hello\n    package: { install: [hello], update_cache: true }\n'), '--hosts', h.name, '--json'));
    expect(r2.code, r2.stderr).toBe(0);
    expect(stepEvents(r2)[0]).toMatchObject({ status: 'planned', summary: 'refresh apt lists (never refreshed), then install hello' });
    expect(await sshOk(sb, h, changedSince)).toBe('');
    expect(await sshOk(sb, h, 'ls -A /tmp | grep -c "^hostsmith-apt" || true')).toBe('0\n');
  });

  it('apply installs the packages and their dependencies; a second apply changes nothing', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const file = recipe('  - name: Tools\n    package: { install: [hello, jq] }\n');
    const r1 = await hostsmith(args('apply', file, '--hosts', h.name, '--yes', '--json'));
    expect(r1.code, r1.stderr + r1.stdout).toBe(0);
    expect(stepEvents(r1)[0]).toMatchObject({ status: 'changed', summary: 'install hello, jq + dependencies libjq1, libonig5' });
    expect(await sshOk(sb, h, status('hello jq libjq1 libonig5'))).toBe('hello install ok installed\njq install ok installed\nlibjq1 install ok installed\nlibonig5 install ok installed\n');
    // Dependencies stay marked automatic, as with a manual apt-get install.
    expect((await sshOk(sb, h, 'apt-mark showauto')).split('\n')).toEqual(expect.arrayContaining(['libjq1', 'libonig5']));
    expect(await sshOk(sb, h, 'hello')).toBe('Hello, world!\n');

    const r2 = await hostsmith(args('apply', file, '--hosts', h.name, '--yes', '--json'));
    expect(r2.code).toBe(0);
    expect(stepEvents(r2).map((e) => [e.status, e.summary])).toEqual([['unchanged', 'hello, jq installed']]);
  });

  it('installed packages, one held with apt-mark hold: plan and apply are unchanged from dpkg alone, in 2 exec channels, then 1 once an apply kept the facts, and the hold stays', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    await sshOk(sb, h, 'apt-mark hold less >/dev/null');
    const before = await sshOk(sb, h, PACKAGES);
    const file = recipe('  - name: Tools\n    package: { install: [curl, less, sudo] }\n');
    for (const [cmd, execs] of [
      [['plan'], '2'],
      [['apply', '--yes'], '2'],
      [['apply', '--yes'], '1'],
    ] as const) {
      const r = await hostsmith(args(cmd[0]!, file, ...cmd.slice(1), '--hosts', h.name, '--json'), { env: { HOSTSMITH_COUNT_EXECS: '1' } });
      expect(r.code, r.stderr + r.stdout).toBe(0);
      expect(stepEvents(r).map((e) => [e.status, e.summary])).toEqual([['unchanged', 'curl, less, sudo installed']]);
      // The facts and the one read of dpkg: no apt-cache policy, no dry run, no install of
      // nothing. A plan keeps no facts, so the first apply meets the host as the plan did
      // (facts, then the read); the next reads the facts that apply kept with the read, in one exec.
      expect(/: (\d+) exec channel\(s\)/.exec(r.stderr)?.[1], r.stderr).toBe(execs);
    }
    expect(await sshOk(sb, h, status('less'))).toBe('less hold ok installed\n');
    expect(await sshOk(sb, h, PACKAGES)).toBe(before);
  });

  it('a later failure puts every package back: purges what the run installed, reinstalls what it removed', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    // sl will be removed by the run; libonig5 is already there (manual) and must survive jq's rollback.
    await sshOk(sb, h, 'DEBIAN_FRONTEND=noninteractive apt-get install -y -q sl libonig5 >/dev/null');
    const before = await sshOk(sb, h, PACKAGES);
    const file = recipe(`  - name: Tools
    package: { install: [hello, jq], remove: [sl] }
  - name: Drop onig
    package: { remove: [libonig5] }
  - name: Breaks
    command: { run: "echo 'disk on fire' >&2; exit 7" }
`);
    const r = await hostsmith(args('apply', file, '--hosts', h.name, '--yes', '--json'));
    expect(r.code, r.stderr + r.stdout).toBe(1);
    expect(stepEvents(r).map((e) => [e.step, e.status, e.summary])).toEqual([
      ['Tools', 'changed', 'install hello, jq + dependencies libjq1; remove sl'],
      // Removing libonig5 also takes out what the step before installed on top of it.
      ['Drop onig', 'changed', 'remove libonig5 + dependents jq, libjq1'],
      ['Breaks', 'failed', expect.any(String)],
    ]);
    expect(r.events.filter((e) => e.event === 'rollback-finished').map((e) => [e.step, e.status])).toEqual([
      ['Drop onig', 'rolled-back'],
      ['Tools', 'rolled-back'],
    ]);
    expect(await sshOk(sb, h, PACKAGES)).toBe(before);
    // The undo was journaled before apply ran: it already names the dependency.
    expect(journalText(state)).toMatch(/"undo":\{"purge":\["hello","jq","libjq1"\],"remove":\[\],"reinstall":\[\{"name":"sl","version":"[^"]+","auto":false\}\]\}/);
  });

  it('a package apt does not know fails with its name and the host, and changes nothing', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const before = await sshOk(sb, h, PACKAGES);
    const r = await hostsmith(args('apply', recipe('  - name: Typo\n    package: { install: [hello, nosuchpkg-xyz] }\n'), '--hosts', h.name, '--yes', '--json'));
    expect(r.code).toBe(1);
    const [step] = stepEvents(r);
    expect(step!.status).toBe('failed');
    expect(step!.error).toContain(`package nosuchpkg-xyz unknown to apt on ${h.name}`);
    expect(step!.error).toContain('Unable to locate package nosuchpkg-xyz');
    expect(await sshOk(sb, h, PACKAGES)).toBe(before);
  });

  it('waits for another apt run to release the dpkg lock instead of failing', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    // A real apt-get holds the lock while its pre-invoke hook sleeps.
    await sshOk(
      sb,
      h,
      `nohup sh -c "DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o 'DPkg::Pre-Invoke::=touch /tmp/locked; sleep 6' sl; date +%s%N > /tmp/released" >/tmp/bg.log 2>&1 </dev/null &`,
    );
    await sshOk(sb, h, 'for i in $(seq 100); do [ -e /tmp/locked ] && exit 0; sleep 0.1; done; exit 1');
    const r = await hostsmith(args('apply', recipe('  - name: Hello\n    package: { install: [hello] }\n'), '--hosts', h.name, '--yes', '--json'));
    const finished = await sshOk(sb, h, 'date +%s%N');
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(await sshOk(sb, h, status('hello sl'))).toBe('hello install ok installed\nsl install ok installed\n');
    // hostsmith finished only after the other apt run had released the lock.
    expect(BigInt(finished.trim())).toBeGreaterThan(BigInt((await sshOk(sb, h, 'cat /tmp/released')).trim()));
  });

  it("apt's state moving after the check: an unrelated change installs as planned; the package itself installed meanwhile fails the step, nothing written", async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    // The package step plans in the batch read at Marker's turn; the fault runs just before its own turn.
    const file = recipe('  - name: Marker\n    file: { path: /etc/pkg-marker, content: "m\\n" }\n  - name: Hello\n    package: { install: [hello] }\n');
    const before = (run: string) => ({ env: { HOSTSMITH_FAULT_BEFORE_STEP: JSON.stringify({ step: 'Hello', run: `ssh -F ${sb.sshConfigPath} ${h.name} '${run}'` }) } });
    // dpkg's status file is rewritten (hold, unhold): apt's inputs moved, hello's plan did not.
    const r1 = await hostsmith(args('apply', file, '--hosts', h.name, '--yes', '--json'), before('apt-mark hold bash >/dev/null && apt-mark unhold bash >/dev/null'));
    expect(r1.code, r1.stderr + r1.stdout).toBe(0);
    expect(stepEvents(r1).map((e) => `${e.step}:${e.status}`)).toEqual(['Marker:changed', 'Hello:changed']);
    expect(await sshOk(sb, h, status('hello'))).toBe('hello install ok installed\n');

    await sshOk(sb, h, 'DEBIAN_FRONTEND=noninteractive apt-get purge -y -q hello >/dev/null && rm /etc/pkg-marker');
    const r2 = await hostsmith(args('apply', file, '--hosts', h.name, '--yes', '--json'), before('DEBIAN_FRONTEND=noninteractive apt-get install -y -q hello >/dev/null'));
    expect(r2.code, r2.stderr + r2.stdout).toBe(1);
    const steps = stepEvents(r2);
    expect(steps.map((e) => `${e.step}:${e.status}`)).toEqual(['Marker:changed', 'Hello:failed']);
    expect(steps[1]!.error).toMatch(
      /^not applied: its state moved since the plan was made \(the packages apt would change on h1 are not as planned now: hello installed\); nothing was written for this step/,
    );
    // Marker rolled back; hello is the one the other hand installed, and stays.
    expect((await sshRun(sb, h, 'test -e /etc/pkg-marker')).code).toBe(1);
    expect(await sshOk(sb, h, status('hello'))).toBe('hello install ok installed\n');
  });

  it('update_cache alone refreshes only lists older than cache_valid_time, so a second apply is unchanged', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    await sshOk(sb, h, `rm -f /var/lib/apt/periodic/update-success-stamp; touch -d '3 hours ago' /var/lib/apt/lists/*Release`);
    const file = recipe('  - name: Refresh\n    package: { update_cache: true, cache_valid_time: 1h }\n');
    const r1 = await hostsmith(args('apply', file, '--hosts', h.name, '--yes', '--json'));
    expect(r1.code, r1.stderr + r1.stdout).toBe(0);
    expect(stepEvents(r1)[0]).toMatchObject({ status: 'changed', summary: 'refresh apt lists (refreshed 3 h ago)' });
    expect(Number(await sshOk(sb, h, 'echo $(( $(date +%s) - $(stat -c %Y /var/lib/apt/periodic/update-success-stamp) ))'))).toBeLessThan(120);
    const r2 = await hostsmith(args('apply', file, '--hosts', h.name, '--yes', '--json'));
    expect(r2.code).toBe(0);
    expect(stepEvents(r2)[0]).toMatchObject({ status: 'unchanged', summary: expect.stringMatching(/^apt lists are fresh/) });
  });

  it('update_cache on a host without apt lists: plan works from temporary lists, apply refreshes and installs', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    await sshOk(sb, h, 'rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin');
    const file = recipe('  - name: Hello\n    package: { install: [hello], update_cache: true }\n');
    const listsAndTmp = 'ls /var/lib/apt/lists /var/cache/apt /tmp';
    const before = await sshOk(sb, h, `${listsAndTmp}; ${DPKG}`);
    const plan = await hostsmith(args('plan', file, '--hosts', h.name, '--json'));
    expect(plan.code, plan.stderr + plan.stdout).toBe(0);
    expect(stepEvents(plan)[0]).toMatchObject({ status: 'planned', summary: 'refresh apt lists (never refreshed), then install hello' });
    expect(await sshOk(sb, h, `${listsAndTmp}; ${DPKG}`)).toBe(before);

    const r1 = await hostsmith(args('apply', file, '--hosts', h.name, '--yes', '--json'));
    expect(r1.code, r1.stderr + r1.stdout).toBe(0);
    expect(await sshOk(sb, h, status('hello'))).toBe('hello install ok installed\n');
    expect(await sshOk(sb, h, 'ls /var/lib/apt/lists')).toMatch(/_Packages/);
    const r2 = await hostsmith(args('apply', file, '--hosts', h.name, '--yes', '--json'));
    expect(stepEvents(r2)[0]).toMatchObject({ status: 'unchanged', summary: 'hello installed' });
  });

  it('a failing install is undone at once: what apt had unpacked is purged', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    // A local package that owns /usr/bin/jq: jq's unpacking fails with a file conflict after
    // hello, libonig5 and libjq1 were unpacked in the same apt run.
    await sshOk(
      sb,
      h,
      'mkdir -p /tmp/blk/DEBIAN /tmp/blk/usr/bin && printf "Package: blocker\\nVersion: 1.0\\nArchitecture: all\\nMaintainer: t <t@example.com>\\nDescription: owns /usr/bin/jq\\n" > /tmp/blk/DEBIAN/control && echo x > /tmp/blk/usr/bin/jq && dpkg-deb -b /tmp/blk /tmp/blocker.deb >/dev/null && dpkg -i /tmp/blocker.deb >/dev/null',
    );
    const before = await sshOk(sb, h, PACKAGES);
    const r = await hostsmith(args('apply', recipe('  - name: Jq\n    package: { install: [hello, jq] }\n'), '--hosts', h.name, '--yes', '--json'));
    expect(r.code, r.stderr + r.stdout).toBe(1);
    const error = stepEvents(r)[0]!.error as string;
    expect(error).toContain(`apt-get on ${h.name} failed`);
    expect(error).toContain("trying to overwrite '/usr/bin/jq', which is also in package blocker");
    expect(error).toContain('the packages it had changed were put back');
    expect(await sshOk(sb, h, PACKAGES)).toBe(before);
  });

  it('a plain apply installs with no dry run; the journal gets the exact undo from dpkg before and after, and undo uses it', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const before = await sshOk(sb, h, PACKAGES);
    // apt's dry run writes nothing of its own, but its log names the simulation: count the apt-get runs instead.
    await sshOk(sb, h, `printf '#!/bin/sh\\necho "$*" >> /tmp/apt-calls\\nexec /usr/bin/apt-get "$@"\\n' > /usr/local/sbin/apt-get && chmod 755 /usr/local/sbin/apt-get`);
    const r = await hostsmith(args('apply', recipe('  - name: Tools\n    package: { install: [hello, jq] }\n'), '--hosts', h.name, '--yes', '--json'));
    expect(r.code, r.stderr + r.stdout).toBe(0);
    // What the step did, as apt did it, not the plan's "with what apt adds to it".
    expect(stepEvents(r)[0]).toMatchObject({ status: 'changed', summary: 'install hello, jq + dependencies libjq1, libonig5' });
    expect(stepEvents(r)[0]!.diff).toMatch(/^\+libonig5 \S+$/m);
    const calls = await sshOk(sb, h, 'cat /tmp/apt-calls');
    expect(calls, 'one apt-get run: the install, no dry run').not.toMatch(/(^| )-s( |$)/m);
    expect(calls.trim().split('\n')).toHaveLength(1);
    const j = journalText(state)
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l));
    const started = j.find((e) => e.kind === 'step-started' && e.step === 'Tools');
    const finished = j.find((e) => e.kind === 'step-finished' && e.step === 'Tools');
    expect(started.undo).toEqual({ purge: [], remove: [], reinstall: [], snapshot: true });
    expect(finished.undo).toEqual({ purge: ['hello', 'jq', 'libjq1', 'libonig5'], remove: [], reinstall: [] });
    await sshOk(sb, h, 'rm -f /usr/local/sbin/apt-get /tmp/apt-calls');
    const u = await hostsmith(['undo', r.events[0]!.runId, '--yes', '--known-hosts', sb.knownHostsPath, '--state-dir', state]);
    expect(u.code, u.stderr + u.stdout).toBe(0);
    expect(u.stdout + u.stderr).toContain('purge hello jq libjq1 libonig5');
    expect(await sshOk(sb, h, PACKAGES)).toBe(before);
  });

  it('a plain apply killed while apt installs: recover works out from the dpkg snapshot what to take back', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    // apt sleeps after dpkg has installed everything: the kill lands with the packages in place and no result journaled.
    const hook = '/etc/apt/apt.conf.d/99hostsmith-test-slow';
    await sshOk(sb, h, `echo 'DPkg::Post-Invoke { "sleep 15"; };' > ${hook}`);
    const before = await sshOk(sb, h, PACKAGES);
    let child: import('node:child_process').ChildProcess | undefined;
    const run = hostsmith(args('apply', recipe('  - name: Tools\n    package: { install: [hello, jq] }\n'), '--hosts', h.name, '--yes', '--json'), {
      onSpawn: (c) => (child = c),
    });
    let seen = false;
    for (let i = 0; i < 600 && !seen; i++) {
      seen = (await sshRun(sb, h, 'pgrep -x sleep >/dev/null && dpkg-query -W -f="\\${Status}" libonig5 2>/dev/null')).stdout === 'install ok installed';
      if (!seen) await new Promise((res) => setTimeout(res, 100));
    }
    expect(seen, 'apt reached its post-invoke hook with the packages installed').toBe(true);
    child!.kill('SIGKILL');
    const r = await run;
    const runId = r.events[0]!.runId as string;
    const j = journalText(state)
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l));
    expect(j.some((e) => e.kind === 'step-started' && e.step === 'Tools')).toBe(true);
    expect(
      j.some((e) => e.kind === 'step-finished' && e.step === 'Tools'),
      'killed before its result',
    ).toBe(false);
    expect(await sshOk(sb, h, status('hello jq'))).toBe('hello install ok installed\njq install ok installed\n');
    const rec = await hostsmith(['recover', runId, '--yes', '--known-hosts', sb.knownHostsPath, '--state-dir', state]);
    expect(rec.code, rec.stdout + rec.stderr).toBe(0);
    // The preview says what the snapshot is for; the host ends as it was.
    expect(rec.stdout + rec.stderr).toContain('snapshot of dpkg');
    expect(await sshOk(sb, h, PACKAGES)).toBe(before);
    await sshOk(sb, h, `rm -f ${hook}`);
  });

  it('rejects invalid package names before contacting any host', async () => {
    const file = recipe('  - name: Bad\n    package: { install: [hello, "Bad Name"], remove: ["x;y"] }\n');
    const r = await hostsmith(['validate', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/r\.yml:4:\d+: steps\[0\]\.package\.install\[1\]: "Bad Name": not a valid Debian package name/);
    expect(r.stderr).toMatch(/r\.yml:4:\d+: steps\[0\]\.package\.remove\[0\]: "x;y": not a valid Debian package name/);
    expect((await sshRun(sandbox(), sandbox().hosts[0]!, 'true')).code).toBe(0);
  });
});
