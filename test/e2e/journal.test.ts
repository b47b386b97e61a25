/**
 * The journal after a crash, on a real host: a controller killed with SIGKILL mid-run leaves a
 * lock on the host and an open journal. The next run names the lock STALE with the real run id
 * and its path; `history` calls the run crashed (and running while it was alive); `show` lists
 * what it left on the host. Host state is checked with plain OpenSSH, never hostsmith's transport.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { sshOk, sshRun } from '../hosts/ssh.js';
import { fixture, hostsmith, sandboxArgs, type CliResult } from './cli.js';

const LOCK = '/run/hostsmith/lock';
const all = (r: CliResult) => r.stdout + r.stderr;

/** A run's journal (the only one in the state dir unless named), as lines of JSON (the last may be cut short: skipped). */
function journal(state: string, runId?: string): { runId: string; entries: Array<Record<string, any>> } | undefined {
  const dir = join(state, 'runs');
  const files = existsSync(dir) ? readdirSync(dir).filter((f) => (runId ? f === `${runId}.ndjson` : f.endsWith('.ndjson'))) : [];
  if (files.length !== 1) return undefined;
  const entries = readFileSync(join(dir, files[0]!), 'utf8')
    .split('\n')
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as Record<string, any>];
      } catch {
        return [];
      }
    });
  return { runId: files[0]!.slice(0, -'.ndjson'.length), entries };
}

async function waitFor<T>(what: string, f: () => T | undefined, ms: number): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describeHosts('journal: a controller killed mid-run is found, named and reported', () => {
  const sandbox = useSandbox(1);
  let dir: string;
  let state: string;
  let child: ChildProcess | undefined;
  beforeAll(() => {
    dir = fixture({
      'slow.yml': `name: slow
steps:
  - name: Write marker
    file: { path: /root/journal-marker, content: "made by the crashed run\\n" }
  - name: Wait
    command: { run: "echo $$ > /root/journal-sleep.pid; exec sleep 120", rollback: "true" }
`,
      'next.yml': `name: next\nsteps:\n  - name: Second\n    file: { path: /root/journal-second, content: "x\\n" }\n`,
      'state/.keep': '',
    });
    state = join(dir, 'state');
  });
  afterAll(async () => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    const sb = sandbox();
    const h = sb.hosts[0]!;
    // The sleep the killed run left on the host, by its pid; then the lock and the files.
    await sshRun(
      sb,
      h,
      `test -f /root/journal-sleep.pid && kill "$(cat /root/journal-sleep.pid)" 2>/dev/null; rm -rf -- ${LOCK} /root/journal-marker /root/journal-second /root/journal-sleep.pid /var/lib/hostsmith/backups`,
    );
    rmSync(dir, { recursive: true, force: true });
  });

  it('SIGKILL during a step: the lock is reported stale with the run id and its path, history says crashed, show lists what is left', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const args = (...a: string[]) => [...a, ...sandboxArgs(sb, state), '--hosts', h.name];
    const first = hostsmith(args('apply', join(dir, 'slow.yml'), '--yes'), { onSpawn: (c) => (child = c) });

    // The journal is on disk before each change: once it shows the slow step started, the file step is done.
    const { runId, entries } = await waitFor(
      'the journal to show the slow step started',
      () => {
        const j = journal(state);
        return j?.entries.some((e) => e.kind === 'step-started' && e.step === 'Wait') ? j : undefined;
      },
      60_000,
    );
    expect(entries.every((e) => e.v === 1)).toBe(true);
    const hostStarted = entries.find((e) => e.kind === 'host-started' && e.lock)!;
    expect(hostStarted).toMatchObject({ lock: LOCK, backupDir: `/var/lib/hostsmith/backups/${runId}`, target: { host: h.address, port: h.port, user: 'root', knownHostsFile: sb.knownHostsPath } });
    expect(hostStarted.target).not.toHaveProperty('vars');
    expect(entries.find((e) => e.kind === 'step-started' && e.step === 'Wait')).toMatchObject({ sudo: false, type: 'command' });

    // While its controller lives, the run is running, and its lock is not called stale.
    const live = await hostsmith(['history', '--state-dir', state, '--json']);
    expect(live.events.find((e) => e.runId === runId)).toMatchObject({ status: 'running' });
    const busy = await hostsmith(args('apply', join(dir, 'next.yml'), '--yes'));
    expect(busy.code, all(busy)).toBe(1);
    expect(all(busy)).toContain(`Run ${runId} is still running on this controller (pid ${child!.pid})`);
    expect(all(busy)).not.toContain('STALE');

    child!.kill('SIGKILL');
    const killed = await first;
    expect(killed.code).toBe(-1); // died of the signal: no exit code
    expect(journal(state, runId)!.entries.some((e) => e.kind === 'run-finished')).toBe(false);
    // What the run did is still on the host, and so is its lock.
    expect(await sshOk(sb, h, 'cat /root/journal-marker')).toBe('made by the crashed run\n');
    expect(await sshOk(sb, h, `cat ${LOCK}/owner`)).toMatch(new RegExp(`^run=${runId} controller=\\S+ pid=${child!.pid} since=`));

    // The next run on that host: refused (exit 1), the lock named stale, with the real run id and its path.
    const next = await hostsmith(args('apply', join(dir, 'next.yml'), '--yes'));
    expect(next.code, all(next)).toBe(1);
    const said = all(next);
    expect(said).toContain(`The lock is STALE: run ${runId} was started on this controller`);
    expect(said).toContain(`its controller is gone (pid ${child!.pid} is not running)`);
    expect(said).toContain(`\`hostsmith recover ${runId}\` finishes that run: it rolls back what the run left on the host and releases the lock (\`hostsmith show ${runId}\``);
    expect(said).not.toContain('<run>');
    // Reported, never broken: the lock still names the crashed run, and nothing of the next run was made.
    expect(await sshOk(sb, h, `cat ${LOCK}/owner`)).toMatch(new RegExp(`^run=${runId} `));
    expect((await sshRun(sb, h, 'test -e /root/journal-second')).code).toBe(1);

    // history: crashed, not open forever (human and --json).
    const hist = await hostsmith(['history', '--state-dir', state, '--json']);
    expect(hist.events.find((e) => e.runId === runId)).toMatchObject({ status: 'crashed', recipe: 'slow', left: 1 });
    const histText = await hostsmith(['history', '--state-dir', state]);
    // An aligned table: columns apart by at least two spaces.
    expect(histText.stdout).toMatch(/^RUN +STARTED +RECIPE +HOSTS +STATUS +CHANGED +LEFT$/m);
    expect(histText.stdout).toMatch(new RegExp(`^${runId}  +\\S+  +slow  +${h.name}  +crashed  +1  +1$`, 'm'));

    // show: the host's state, the completed file step left on it with its undo, the step in flight, and what to do.
    const show = await hostsmith(['show', runId, '--state-dir', state]);
    expect(show.code, all(show)).toBe(0);
    expect(show.stdout).toContain(`CRASHED: the run never finished and its controller is gone (pid ${child!.pid} is not running)`);
    expect(show.stdout).toContain(`${h.name}: STOPPED PART-WAY`);
    expect(show.stdout).toContain(`reached as root@${h.address}:${h.port}`);
    expect(show.stdout).toContain(`lock ${LOCK}`);
    expect(show.stdout).toContain(`${h.name}  Write marker [file]  changed: create /root/journal-marker`);
    expect(show.stdout).toContain(`${h.name}  Wait [command]  IN FLIGHT, NOT FINISHED`);
    expect(show.stdout).toMatch(
      /left on the host \(completed, not rolled back\), newest first:\n {4}Write marker \[file\]: create \/root\/journal-marker[^\n]* — to take back: remove \/root\/journal-marker\n/,
    );
    expect(show.stdout).toContain(
      `next: Nothing will finish this run by itself: its controller is gone. \`hostsmith recover ${runId}\` rolls back what it left on ${h.name} (the step in flight only if the host shows its change) and releases its host lock.`,
    );
    const showJson = await hostsmith(['show', runId, '--state-dir', state, '--json']);
    const st = showJson.events.find((e) => e.event === 'run-state')!;
    expect(st).toMatchObject({
      status: 'crashed',
      hosts: { [h.name]: { status: 'open', lock: LOCK, left: [{ step: 'Write marker', undo: 'remove /root/journal-marker' }], inFlight: [{ step: 'Wait' }] } },
    });

    // recover lists it, then finishes it: the marker is taken back, the sleep (no change to see) closed, the lock released.
    const listed = await hostsmith(['recover', '--state-dir', state]);
    expect(listed.code, all(listed)).toBe(0);
    expect(listed.stdout).toContain(`CRASHED: its controller is gone (pid ${child!.pid} is not running); left on hosts: 1 change(s). Finish it: hostsmith recover ${runId}`);
    const rec = await hostsmith(['recover', runId, '--yes', '--state-dir', state]);
    expect(rec.code, all(rec)).toBe(0);
    // The sleep the dead run left running is stopped first, so it cannot change the host after recover looked.
    expect(rec.stdout).toMatch(new RegExp(`${h.name}: rolled-back: stopped \\d command\\(s\\) the run had left running \\(.*sleep 120.*\\); rolled back 1 change\\(s\\); found unchanged: Wait`));
    expect((await sshRun(sb, h, `test -e /root/journal-marker || test -e ${LOCK}`)).code).toBe(1);
    const hist2 = await hostsmith(['history', '--state-dir', state, '--json']);
    expect(hist2.events.find((e) => e.runId === runId)).toMatchObject({ status: 'recovered', left: 0 });
    const again = await hostsmith(['recover', runId, '--yes', '--state-dir', state]);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/is not open: it finished \(recovered/);
    const after = await hostsmith(args('apply', join(dir, 'next.yml'), '--yes'));
    expect(after.code, all(after)).toBe(0);
    expect((await sshRun(sb, h, `test -e ${LOCK}`)).code).toBe(1);
  });
});
