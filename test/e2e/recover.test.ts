/**
 * `hostsmith recover` after real crashes, on a real host. The controller of a run touching group,
 * user, cron, file, template, line and command steps, with handlers (one that records each call,
 * one that fails so the run rolls back), is killed with SIGKILL:
 * - after each journal entry of the run, in turn (HOSTSMITH_FAULT_KILL_AT_WRITE=n: the process
 *   kills itself once its n-th entry is on disk) — through the applies, the handlers, the
 *   rollback and the handler run again after it;
 * - in the middle of a step's apply (a timer, once the journal shows the step started);
 * - at random times.
 * Each time, `recover <run-id>` must leave the host equal to its snapshot from before the run
 * (content, mode and owner of every path outside /var/log, apt's caches and lists and hostsmith's
 * own state), the lock gone, exit 0. The host is read with plain OpenSSH, never through hostsmith.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, expect, it } from 'vitest';
import { sshOk, sshRun } from '../hosts/ssh.js';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { fixture, hostsmith, sandboxArgs, type CliResult } from './cli.js';

const RECIPE = `name: crashme
vars:
  pause: { default: "0.2" }
steps:
  - name: Group
    group: { name: crashgrp }
  - name: User
    user: { name: crashusr, shell: /bin/sh }
  - name: Cron
    cron: { name: crash-job, schedule: "0 4 * * *", command: "true" }
  - name: File
    file: { path: /srv/crash/motd, content: "hello\\n", mode: "0640" }
  - name: Template
    template: { src: t.hbs, dest: /etc/crash.conf }
    notify: [Record, Boom]
  - name: Line
    line: { path: /etc/crash-app.conf, line: "workers=8", match: "^workers=" }
  - name: Command
    command: { run: "sleep {{pause}}; touch /srv/crash/mark", creates: /srv/crash/mark, rollback: "rm -f /srv/crash/mark" }
handlers:
  - name: Record
    command: { run: "echo ran >> /var/log/crash-handler.log", rollback: "true" }
  - name: Boom
    command: { run: "exit 1" }
`;

const LOCK = '/run/hostsmith/lock';
const EXCLUDED = ['/var/log', '/var/cache/apt', '/var/lib/apt/lists', '/var/lib/hostsmith'];
const MARK = '/var/log/hostsmith-recover-test.mark';
/**
 * Every path of the host's root filesystem (other mounts, such as /proc and /run, are not on it)
 * with type, mode, owner, group and link target; then `sha256  path` of regular files —
 * all of them (`full`), or only those whose inode changed since MARK was touched (ctime cannot be
 * set back, so a file not in that list still holds the bytes it held then). The shadow tools'
 * `-` copies (passwd-, group-…) are left out: useradd rewrites them, and rollback restores
 * account entries, not those copies.
 */
const snapshotScript = (full: boolean) =>
  [
    `prune='${EXCLUDED.map((p) => `-path ${p}`).join(' -o ')}'`,
    'find / -xdev \\( $prune \\) -prune -o -printf "%p %y %m %u %g %l\\n" | sort',
    `find / -xdev \\( $prune \\) -prune -o -type f ${full ? '' : `-cnewer ${MARK} `}-print0 | sort -z | xargs -0 -r sha256sum`,
  ].join('\n');
const SHADOW_COPIES = /^(\/etc\/(passwd|group|shadow|gshadow|subuid|subgid)- .*|[0-9a-f]{64} {2}\/etc\/(passwd|group|shadow|gshadow|subuid|subgid)-)$/;
const HASH = /^([0-9a-f]{64}) {2}(.*)$/;

interface Snapshot {
  listing: string[];
  hashes: Map<string, string>;
}

const all = (r: CliResult) => r.stdout + r.stderr;

describeHosts('recover: a run killed at any point is finished and the host put back', () => {
  const sandbox = useSandbox(1);
  let dir: string;
  let state: string;
  let before: Snapshot;
  const host = () => sandbox().hosts[0]!;
  const snapshot = async (full = false): Promise<Snapshot> => {
    const lines = (await sshOk(sandbox(), host(), snapshotScript(full))).split('\n').filter((l) => l && !SHADOW_COPIES.test(l));
    const hashes = new Map(lines.flatMap((l) => (HASH.test(l) ? [[HASH.exec(l)![2]!, HASH.exec(l)![1]!] as [string, string]] : [])));
    return { listing: lines.filter((l) => !HASH.test(l)), hashes };
  };
  /** What differs from the host before the run: paths, types, modes, owners, and the content of every file touched since. */
  const differences = async (): Promise<string[]> => {
    const now = await snapshot();
    const was = new Set(before.listing);
    const is = new Set(now.listing);
    return [
      ...before.listing.filter((l) => !is.has(l)).map((l) => `- ${l}`),
      ...now.listing.filter((l) => !was.has(l)).map((l) => `+ ${l}`),
      ...[...now.hashes].filter(([p, h]) => before.hashes.get(p) !== h).map(([p]) => `content of ${p}`),
    ];
  };
  const handlerCalls = async () => Number((await sshOk(sandbox(), host(), 'cat /var/log/crash-handler.log 2>/dev/null | wc -l')).trim());
  const runIds = () => (existsSync(join(state, 'runs')) ? readdirSync(join(state, 'runs')).map((f) => f.replace(/\.ndjson$/, '')) : []);
  const entries = (runId: string) =>
    readFileSync(join(state, 'runs', `${runId}.ndjson`), 'utf8')
      .split('\n')
      .flatMap((l) => {
        try {
          return [JSON.parse(l) as Record<string, any>];
        } catch {
          return [];
        }
      });

  /** Starts the run; `kill` decides when it dies. Returns the killed run's id. */
  async function crash(o: { atWrite?: number; kill?: (pid: number, runId: () => string | undefined) => Promise<void>; args?: string[]; recipe?: string }): Promise<string> {
    const known = new Set(runIds());
    const newRun = () => runIds().find((id) => !known.has(id));
    let pid = 0;
    const r = hostsmith(['apply', join(dir, o.recipe ?? 'crash.yml'), ...sandboxArgs(sandbox(), state), '--hosts', host().name, '--yes', ...(o.args ?? [])], {
      env: o.atWrite ? { HOSTSMITH_FAULT_KILL_AT_WRITE: String(o.atWrite) } : {},
      onSpawn: (c) => (pid = c.pid!),
    });
    if (o.kill) await o.kill(pid, newRun);
    const done = await r;
    const id = newRun();
    if (!id && !o.kill) throw new Error(`the run left no journal (exit ${done.code}): ${all(done)}`);
    return id ?? '';
  }

  /** recover, then the host must be as before, the lock gone, the run closed. */
  async function recoverAndCheck(runId: string, what: string): Promise<CliResult> {
    const rec = await hostsmith(['recover', runId, '--yes', '--state-dir', state]);
    expect(rec.code, `${what}: ${all(rec)}`).toBe(0);
    expect(await differences(), `${what}: host not as before the run`).toEqual([]);
    expect((await sshRun(sandbox(), host(), `test -e ${LOCK}`)).code, `${what}: lock left`).toBe(1);
    const last = entries(runId).at(-1);
    expect(last, what).toMatchObject({ kind: 'run-finished', status: 'recovered', exitCode: 0 });
    return rec;
  }

  beforeAll(async () => {
    dir = fixture({
      'crash.yml': RECIPE,
      'templates/t.hbs': 'crash on {{facts.hostname}}\n',
      // Its `unless` joins the probe batch and keeps it busy for 4 s. The second step's read is
      // there so that a batch is made at all (a single read goes as its own exec).
      'slowprobe.yml':
        'name: slowprobe\nsteps:\n  - name: Probe slowly\n    file: { path: /srv/crash-probe, content: "p" }\n    unless: "sleep 4; false"\n  - name: Probe beside it\n    file: { path: /srv/crash-probe-2, content: "q" }\n',
    });
    state = join(dir, 'state');
    await sshOk(sandbox(), host(), `printf '# app\\nworkers=2\\n' > /etc/crash-app.conf; touch ${MARK}; sleep 1`);
    before = await snapshot(true);
  });

  it('a run that is not killed ends rolled back on its own (the baseline the kill points cut)', async () => {
    const r = await hostsmith(['apply', join(dir, 'crash.yml'), ...sandboxArgs(sandbox(), state), '--hosts', host().name, '--yes', '--json']);
    expect(r.code, all(r)).toBe(1);
    const id = r.events.find((e) => e.event === 'run-started')!.runId as string;
    // The kinds of entry the kill points below land after, in the order the run writes them.
    const kinds = entries(id).map((e) => `${e.kind}${e.afterRollback ? '+again' : ''}`);
    expect(kinds.length).toBe(41);
    expect(new Set(kinds)).toEqual(
      new Set(['run-started', 'host-started', 'step-started', 'step-finished', 'rollback-started', 'rollback-finished', 'step-started+again', 'host-finished', 'run-finished']),
    );
    expect(await differences()).toEqual([]);
  }, 60_000);

  /**
   * After entries of every kind and phase (the run writes 41): run-started (1), host-started at
   * connect (2), host-started naming the lock taken before the first change (3),
   * step-started/-finished of group, user and cron (4-8), the template that notifies (12, 13),
   * the command (16, 17), the handler that records (18, 19) and the one that fails (20, 21), the
   * rollback's start and middle (22, 23, 29, 36), the handler run again after the rollback (38,
   * 39), and host-finished (40: only the run's end is missing). With the kill in the middle of a
   * command and the random kills below, that is 25 kill points.
   */
  const POINTS = [1, 2, 3, 4, 5, 6, 7, 8, 12, 13, 16, 17, 18, 19, 20, 21, 22, 23, 29, 36, 38, 39, 40];
  it(`SIGKILL after each of ${POINTS.length} journal entries: recover puts the host back every time`, async () => {
    for (const n of POINTS) {
      const calls = await handlerCalls();
      const runId = await crash({ atWrite: n });
      const es = entries(runId);
      const what = `killed after entry ${n} (${es.at(-1)?.kind} ${es.at(-1)?.step ?? ''})`;
      expect(es.length, what).toBe(n);
      expect(
        es.some((e) => e.kind === 'run-finished'),
        what,
      ).toBe(false);
      // Each kill point is listed as crashed by recover with no argument.
      const listed = await hostsmith(['recover', '--state-dir', state, '--json']);
      // Crashed; abandoned when every host had finished (only the run's end is missing).
      expect(
        listed.events.find((e) => e.runId === runId),
        what,
      ).toMatchObject({ status: es.some((e) => e.kind === 'host-finished') ? 'abandoned' : 'crashed', recoverable: true });
      const rec = await recoverAndCheck(runId, what);
      // Once the recording handler has run for the template, the template's rollback (by the run or
      // by the recover) makes it run once more, by whichever got there: never twice, never skipped.
      const ranBefore = es.some((e) => e.kind === 'step-finished' && e.step === 'Record' && e.status === 'changed');
      const expected = ranBefore ? 2 : 0;
      expect(await handlerCalls(), `${what}: handler calls; ${all(rec)}`).toBe(calls + expected);
    }
  }, 600_000);

  it('SIGKILL in the middle of a step apply, and at random times: recover puts the host back', async () => {
    // In the middle of the command step's sleep: its change (the mark) is not made yet, and the
    // command goes on running on the host after its controller died: recover stops it first.
    const mid = await crash({
      args: ['--var', 'pause=8'],
      kill: async (pid, runId) => {
        for (let i = 0; i < 300; i++) {
          const id = runId();
          if (id && entries(id).some((e) => e.kind === 'step-started' && e.step === 'Command')) break;
          await new Promise((r) => setTimeout(r, 20));
        }
        await new Promise((r) => setTimeout(r, 300));
        process.kill(pid, 'SIGKILL');
      },
    });
    const rec = await recoverAndCheck(mid, 'killed during the command step');
    expect(rec.stdout).toMatch(/stopped \d command\(s\) the run had left running \(.*sleep 8/);
    expect(rec.stdout).toMatch(/found unchanged: Command/);
    await new Promise((r) => setTimeout(r, 8000)); // the sleep would have ended by now: still no mark
    expect((await sshRun(sandbox(), host(), 'test -e /srv/crash/mark')).code).toBe(1);
    // In the middle of the probe batch (the batch is busy with a 4 s `unless`): the batch still
    // running on the host is stopped, and its scratch folder goes too.
    const inBatch = await crash({
      recipe: 'slowprobe.yml',
      kill: async (pid) => {
        // The batch runs before the first change (so before the run takes its host lock): its scratch folder on the host says it is under way.
        for (let i = 0; i < 300; i++) {
          if ((await sshOk(sandbox(), host(), 'ls -d /tmp/hostsmith-probe.* 2>/dev/null | wc -l')) === '1\n') break;
          await new Promise((r) => setTimeout(r, 50));
        }
        await new Promise((r) => setTimeout(r, 500));
        process.kill(pid, 'SIGKILL');
      },
    });
    expect(
      entries(inBatch).some((e) => e.kind === 'step-started'),
      'killed before any step started',
    ).toBe(false);
    expect(await sshOk(sandbox(), host(), 'ls -d /tmp/hostsmith-probe.* 2>/dev/null | wc -l')).toBe('1\n');
    await recoverAndCheck(inBatch, 'killed during the probe batch');
    expect(await sshOk(sandbox(), host(), 'ls -d /tmp/hostsmith-probe.* 2>/dev/null | wc -l')).toBe('0\n');

    // At random times from the start: anywhere in connecting, applying, handlers or rollback.
    for (let i = 0; i < 2; i++) {
      const ms = Math.floor(Math.random() * 2500);
      const id = await crash({
        kill: async (pid) => {
          await new Promise((r) => setTimeout(r, ms));
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            /* already finished */
          }
        },
      });
      // Killed before it wrote anything, or after it finished: nothing to recover, nothing changed.
      if (!id || entries(id).some((e) => e.kind === 'run-finished')) {
        expect(await differences()).toEqual([]);
        continue;
      }
      await recoverAndCheck(id, `killed ${ms} ms after the start`);
    }
  }, 300_000);

  it('a recover refuses a run whose controller still runs, and one that already finished', async () => {
    let pid = 0;
    let child: import('node:child_process').ChildProcess | undefined;
    const known = new Set(runIds());
    const slow = fixture({ 'slow.yml': 'name: slow\nsteps:\n  - name: Wait\n    command: { run: "sleep 20", rollback: "true" }\n' });
    const run = hostsmith(['apply', join(slow, 'slow.yml'), ...sandboxArgs(sandbox(), state), '--hosts', host().name, '--yes'], {
      onSpawn: (c) => {
        pid = c.pid!;
        child = c;
      },
    });
    let id: string | undefined;
    for (let i = 0; i < 300 && !id; i++) {
      id = runIds().find((x) => !known.has(x) && entries(x).some((e) => e.kind === 'step-started'));
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(id).toBeDefined();
    const busy = await hostsmith(['recover', id!, '--yes', '--state-dir', state]);
    expect(busy.code, all(busy)).toBe(2);
    expect(busy.stderr).toContain(`run ${id} is still running: its controller (pid ${pid}) is alive on this machine`);
    child!.kill('SIGKILL');
    await run;
    await recoverAndCheck(id!, 'killed during a sleep');
    const again = await hostsmith(['recover', id!, '--yes', '--state-dir', state]);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/is not open: it finished \(recovered/);
    const none = await hostsmith(['recover', '--state-dir', state]);
    expect(none.stdout).toContain('No open runs');
  }, 120_000);
});
