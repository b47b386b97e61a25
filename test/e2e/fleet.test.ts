/**
 * Fleets that fail safely (SPEC §12) on six real hosts: `--batch 2` runs h1..h6 two at a time;
 * the recipe's last step fails where the inventory sets `fail: yes`. With --max-fail 0 the batch
 * after the failing one never starts: its hosts end not-started and are never contacted. With
 * --rollback-scope fleet the hosts of the earlier batch, finished ok, are rolled back too (and keep
 * their lock until then); with --rollback-scope batch only the failing batch's hosts. Host state is
 * read with plain OpenSSH, never with hostsmith.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, beforeEach, expect, it } from 'vitest';
import type { Sandbox } from '../hosts/hosts.js';
import { sshOk } from '../hosts/ssh.js';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { fixture, hostsmith, type CliResult } from './cli.js';

const RECIPE = `name: fleet
vars:
  fail: { default: "no" }
steps:
  - name: Config
    file: { path: /srv/fleet/app.conf, content: "version 2\\n", mode: "0640" }
  - name: Workers
    line: { path: /srv/fleet/base.conf, line: "workers=8", match: "^workers=" }
  - name: Check
    command: { run: "test {{fail}} = no", rollback: "true" }
`;

/** What the recipe touches, and whether hostsmith ever left anything on the host (lock, backups). */
const SNAPSHOT = ['{ find /srv/fleet -printf "%p %m %u %g %y\\n"', '  sha256sum /srv/fleet/*', '  ls -d /run/hostsmith/lock 2>/dev/null', '} | sort'].join('\n');
const RESET = `rm -rf /srv/fleet && mkdir -p /srv/fleet && printf '# base\\nworkers=2\\n' > /srv/fleet/base.conf`;
/** Nothing of an apply there: no run lock, no backups folder (the sandbox itself keeps files in /run/hostsmith). */
const UNTOUCHED = 'test ! -e /run/hostsmith/lock && test ! -e /var/lib/hostsmith && echo untouched';

describeHosts('fleets that fail safely: batches, failure budget, rollback scope', () => {
  const sandbox = useSandbox(6);
  let dir: string;
  let before: string;
  const host = (n: number) => sandbox().hosts[n - 1]!;
  const snapshot = (n: number) => sshOk(sandbox(), host(n), SNAPSHOT);
  /** SSH logins the host's sshd has logged so far (any client: hostsmith or these checks). */
  const logins = (n: number) => (readFileSync(join(host(n).dir, 'sshd.log'), 'utf8').match(/Accepted publickey/g) ?? []).length;
  const loginsOf = () => [1, 2, 3, 4, 5, 6].map(logins);

  /** An inventory of the sandbox's hosts with `fail: yes` on the ones named. */
  const inventory = (sb: Sandbox, failing: number[]): string => {
    const file = join(dir, `inventory-${failing.join('-')}.yml`);
    const lines = sb.hosts.map((h, i) => `  ${h.name}: { address: ${h.address}, port: ${h.port}, vars: { fail: "${failing.includes(i + 1) ? 'yes' : 'no'}" } }`);
    writeFileSync(file, `defaults: { user: root, identity: ${sb.keyPath} }\nhosts:\n${lines.join('\n')}\n`);
    return file;
  };
  const apply = (state: string, failing: number[], ...extra: string[]): Promise<CliResult> =>
    hostsmith(['apply', join(dir, 'fleet.yml'), '-i', inventory(sandbox(), failing), '--known-hosts', sandbox().knownHostsPath, '--state-dir', state, '--yes', '--json', ...extra]);
  const finished = (r: CliResult) => Object.fromEntries(r.events.filter((e) => e.event === 'host-finished').map((e) => [e.host as string, e]));
  const journal = async (state: string, runId: string) => {
    const { readRun } = await import('../../src/engine/journal.js');
    return readRun(state, runId);
  };

  beforeAll(async () => {
    dir = fixture({ 'fleet.yml': RECIPE });
    await Promise.all([1, 2, 3, 4, 5, 6].map((n) => sshOk(sandbox(), host(n), RESET)));
    before = await snapshot(1);
    expect(before).toMatch(/workers=|base\.conf/);
    for (const n of [2, 3, 4, 5, 6]) expect(await snapshot(n)).toBe(before);
  });

  beforeEach(async () => {
    // Hosts 1–4 back to the start (the earlier test may have left h1/h2 changed); 5–6 are checked, not reset.
    await Promise.all([1, 2, 3, 4].map((n) => sshOk(sandbox(), host(n), RESET)));
  });

  it('refuses bad fleet options with exit 2 before any host is contacted', async () => {
    const state = join(dir, 'state-bad');
    for (const [opts, said] of [
      [['--batch', '0'], /--batch: "0" is not a number of hosts per batch \(1 or more/],
      [['--batch', '101%'], /--batch: "101%"/],
      [['--batch', '2', '--max-fail', '-1'], /--max-fail: "-1"/],
      [['--batch', 'two'], /--batch: "two"/],
      [['--max-fail', '1'], /--max-fail needs --batch/],
      [['--rollback-scope', 'all'], /--rollback-scope: "all" is not one of host, batch, fleet/],
    ] as const) {
      const r = await apply(state, [3], ...opts);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(said);
      expect(r.stderr).toMatch(/nothing was contacted or changed/);
      expect(r.events.filter((e) => e.event === 'host-connected')).toEqual([]);
    }
    expect(existsSync(join(state, 'runs'))).toBe(false);
    for (const n of [5, 6]) expect(await sshOk(sandbox(), host(n), UNTOUCHED)).toBe('untouched\n');
  });

  it('plan takes the fleet options, plans every host and says they shape only the apply', async () => {
    const r = await hostsmith(['plan', join(dir, 'fleet.yml'), '-i', inventory(sandbox(), [3]), '--known-hosts', sandbox().knownHostsPath, '--hosts', 'h1,h2,h3', '--batch', '1', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(Object.keys(finished(r)).sort()).toEqual(['h1', 'h2', 'h3']);
    expect(r.events.some((e) => e.event === 'batch-started')).toBe(false);
    expect(r.stderr).toMatch(/--batch, --max-fail and --rollback-scope only shape the apply/);
  });

  it('--batch 2 --max-fail 0: h1–h2 changed, h3–h4 rolled back, h5–h6 not started and never contacted; exit 1', async () => {
    const state = join(dir, 'state-host');
    const was = loginsOf();
    const r = await apply(state, [3, 4], '--batch', '2', '--max-fail', '0');
    const now = loginsOf();
    expect(r.code, r.stderr + r.stdout).toBe(1);
    // sshd saw hostsmith log in to h1–h4 and never to h5–h6.
    expect(now.map((c, i) => c > was[i]!)).toEqual([true, true, true, true, false, false]);
    const runId = r.events[0]!.runId as string;
    expect(r.events.filter((e) => e.event === 'batch-started').map((e) => e.hosts)).toEqual([
      ['h1', 'h2'],
      ['h3', 'h4'],
    ]);
    const f = finished(r);
    expect(Object.fromEntries(Object.entries(f).map(([h, e]) => [h, e.status]))).toEqual({
      h1: 'ok',
      h2: 'ok',
      h3: 'rolled-back',
      h4: 'rolled-back',
      h5: 'not-started',
      h6: 'not-started',
    });
    expect(f.h5!.error).toMatch(/not started: batch 2 of 3: 2 of its 2 host\(s\) failed \(h3, h4\), more than --max-fail 0 allows/);
    expect(f.h5!.cause).toMatchObject({ host: 'h3', step: 'Check' });
    expect(
      r.events
        .filter((e) => e.event === 'host-connected')
        .map((e) => e.host)
        .sort(),
    ).toEqual(['h1', 'h2', 'h3', 'h4']);
    const end = r.events.find((e) => e.event === 'run-finished')!;
    expect([end.exitCode, end.hosts.h6.status]).toEqual([1, 'not-started']);

    for (const n of [1, 2]) {
      const s = await snapshot(n);
      expect(s).toContain(`/srv/fleet/app.conf 640 root root f`);
      expect(await sshOk(sandbox(), host(n), 'cat /srv/fleet/base.conf')).toBe('# base\nworkers=8\n');
    }
    for (const n of [3, 4]) expect(await snapshot(n)).toBe(before);
    for (const n of [5, 6]) {
      expect(await snapshot(n)).toBe(before);
      expect(await sshOk(sandbox(), host(n), UNTOUCHED)).toBe('untouched\n');
    }

    const entries = await journal(state, runId);
    const notStarted = entries.filter((e) => e.kind === 'host-finished' && e.status === 'not-started').map((e) => (e as { host: string }).host);
    expect(notStarted).toEqual(['h5', 'h6']);
    expect(entries.some((e) => e.kind === 'host-started' && ['h5', 'h6'].includes(e.host))).toBe(false);
    expect(entries.find((e) => e.kind === 'run-finished')).toMatchObject({ status: 'rolled-back', exitCode: 1 });

    const human = await hostsmith(['show', runId, '--state-dir', state]);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toMatch(/h5: not-started — h5: not started: batch 2 of 3/);
    expect(human.stdout).toMatch(/in 3 batches \(h1, h2 \| h3, h4 \| h5, h6\), at most 0 failed host\(s\) per batch; rollback scope host/);
  });

  it('--rollback-scope fleet: h1–h2, finished ok in batch 1, are rolled back with h3–h4 (holding their lock until then); show names the cause; undo has nothing to do', async () => {
    const state = join(dir, 'state-fleet');
    const seen = join(dir, 'locks-seen');
    // Just before h3's failing step (batch 2), plain ssh looks for h1's run lock: it must still be held.
    const probe = `[ "$HOSTSMITH_HOST" = h3 ] && ssh -F ${sandbox().sshConfigPath} h1 'test -d /run/hostsmith/lock' && touch ${seen}`;
    const was = loginsOf();
    const r = await hostsmith(
      [
        'apply',
        join(dir, 'fleet.yml'),
        '-i',
        inventory(sandbox(), [3, 4]),
        '--known-hosts',
        sandbox().knownHostsPath,
        '--state-dir',
        state,
        '--yes',
        '--json',
        '--batch',
        '2',
        '--rollback-scope',
        'fleet',
      ],
      { env: { HOSTSMITH_FAULT_BEFORE_STEP: JSON.stringify({ step: 'Check', run: probe }) } },
    );
    expect(r.code, r.stderr + r.stdout).toBe(1);
    expect(loginsOf().slice(4)).toEqual(was.slice(4));
    expect(existsSync(seen)).toBe(true);
    const runId = r.events[0]!.runId as string;
    const f = finished(r);
    expect(Object.fromEntries(Object.entries(f).map(([h, e]) => [h, e.status]))).toEqual({
      h1: 'rolled-back',
      h2: 'rolled-back',
      h3: 'rolled-back',
      h4: 'rolled-back',
      h5: 'not-started',
      h6: 'not-started',
    });
    for (const h of ['h1', 'h2']) {
      expect(f[h]!.cause).toMatchObject({ host: 'h3', step: 'Check' });
      expect(f[h]!.rolledBack).toBe(3);
      expect(f[h]!.error).toMatch(/rolled back because h3 failed at step "Check" and --rollback-scope is fleet/);
    }
    expect(f.h3!.cause).toBeUndefined();
    // h1's host-finished waits for batch 2: its lock and connection were kept until its rollback.
    const order = r.events.map((e) => `${e.event}:${e.host ?? e.batch ?? ''}`);
    expect(order.indexOf('host-finished:h1')).toBeGreaterThan(order.indexOf('host-finished:h3'));
    expect(order.indexOf('batch-started:2')).toBeGreaterThan(-1);
    expect(order).not.toContain('batch-started:3');
    // Every completed step of h1 rolled back, newest first.
    expect(r.events.filter((e) => e.event === 'rollback-finished' && e.host === 'h1').map((e) => `${e.step} ${e.status}`)).toEqual(['Check rolled-back', 'Workers rolled-back', 'Config rolled-back']);

    for (const n of [1, 2, 3, 4, 5, 6]) expect(await snapshot(n), `h${n}`).toBe(before);
    for (const n of [5, 6]) expect(await sshOk(sandbox(), host(n), UNTOUCHED)).toBe('untouched\n');

    const entries = await journal(state, runId);
    const h1End = entries.find((e) => e.kind === 'host-finished' && e.host === 'h1');
    expect(h1End).toMatchObject({ status: 'rolled-back', cause: { host: 'h3', step: 'Check' } });
    expect(entries.find((e) => e.kind === 'run-started')).toMatchObject({
      fleet: {
        batches: [
          ['h1', 'h2'],
          ['h3', 'h4'],
          ['h5', 'h6'],
        ],
        rollbackScope: 'fleet',
      },
    });

    const human = await hostsmith(['show', runId, '--state-dir', state]);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toMatch(/^h1: rolled-back$/m);
    expect(human.stdout).toMatch(/^ {2}rolled back because h3 failed at step "Check": step "Check" failed/m);
    expect(human.stdout).toMatch(/^h5: not-started/m);
    expect(human.stdout).toMatch(/^ {2}not started because h3 failed at step "Check"/m);
    const json = await hostsmith(['show', runId, '--state-dir', state, '--json']);
    const stateLine = json.events.find((e) => e.event === 'run-state')!;
    expect(stateLine.hosts.h2.cause).toMatchObject({ host: 'h3', step: 'Check' });
    expect(stateLine.hosts.h2.left).toEqual([]);

    const undo = await hostsmith(['undo', runId, '--yes', '--state-dir', state]);
    expect(undo.code, undo.stderr + undo.stdout).toBe(0);
    expect(undo.stdout).toMatch(/nothing to undo .*everything it changed was already rolled back/);
  });

  it('--rollback-scope batch --max-fail 1: only the failing batch rolls back (h4 because of h3); later batches still run', async () => {
    await Promise.all([5, 6].map((n) => sshOk(sandbox(), host(n), RESET)));
    const state = join(dir, 'state-batch');
    const r = await apply(state, [3], '--batch', '2', '--max-fail', '1', '--rollback-scope', 'batch');
    expect(r.code, r.stderr + r.stdout).toBe(1);
    const f = finished(r);
    expect(Object.fromEntries(Object.entries(f).map(([h, e]) => [h, e.status]))).toEqual({
      h1: 'ok',
      h2: 'ok',
      h3: 'rolled-back',
      h4: 'rolled-back',
      h5: 'ok',
      h6: 'ok',
    });
    expect(f.h4!.cause).toMatchObject({ host: 'h3', step: 'Check' });
    expect(f.h4!.error).toMatch(/--rollback-scope is batch/);
    expect(f.h1!.cause).toBeUndefined();
    for (const n of [3, 4]) expect(await snapshot(n), `h${n}`).toBe(before);
    for (const n of [1, 2, 5, 6]) {
      expect(await sshOk(sandbox(), host(n), 'cat /srv/fleet/base.conf; ls -d /run/hostsmith/lock 2>/dev/null; true'), `h${n}`).toBe('# base\nworkers=8\n');
    }
  });
});
