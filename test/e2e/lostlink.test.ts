/**
 * Lost links on a real host (SPEC §9): the SSH session of a running apply is killed on the host
 * side (its sshd processes, from outside the host's namespaces) while a command step runs.
 * - sshd still listens: the run reconnects, stops the command the dead session left running,
 *   finds the step made no change, and rolls back what it did (exit 1, host as before).
 * - sshd stops answering (its listener frozen with SIGSTOP) longer than the reconnect budget:
 *   the host is given up, the run stays open with its lock on the host, the message names
 *   `hostsmith recover <run-id>` (exit 4); once sshd answers again, recover finishes it.
 * The host is read with plain OpenSSH, never through hostsmith.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeAll, expect, it } from 'vitest';
import { sshOk, sshRun } from '../hosts/ssh.js';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { fixture, hostsmith, sandboxArgs, type CliResult } from './cli.js';

const RECIPE = `name: lostlink
steps:
  - name: File
    file: { path: /srv/ll/motd, content: "hello\\n" }
  - name: Line
    line: { path: /etc/ll.conf, line: "workers=8", match: "^workers=" }
  - name: Slow
    command: { run: "sleep 6; touch /srv/ll-mark", creates: /srv/ll-mark, rollback: "rm -f /srv/ll-mark" }
`;
const LOCK = '/run/hostsmith/lock';
const SNAPSHOT = 'for p in /srv/ll /srv/ll-mark /etc/ll.conf /run/hostsmith/lock; do stat -c "%n %a %U %s" "$p" 2>/dev/null || echo "$p absent"; done; cat /etc/ll.conf';
const all = (r: CliResult) => r.stdout + r.stderr;

/** The host's sshd listener, as this machine sees it: the sshd child of the host's init (tini). */
function listenerPid(sandboxDir: string): number {
  const st = JSON.parse(readFileSync(join(sandboxDir, 'sandbox.json'), 'utf8')) as { hosts: Array<{ init?: { pid: number } }> };
  const init = st.hosts[0]!.init!.pid;
  const pid = execFileSync('pgrep', ['-P', String(init), 'sshd'], { encoding: 'utf8' })
    .trim()
    .split('\n')[0];
  if (!pid) throw new Error('no sshd listener under the host init');
  return Number(pid);
}

/**
 * Kills every SSH session on the host — the sshd processes under the listener (privileged
 * monitor and session child) — so the links drop; the commands they ran are left running, as
 * when a network link dies.
 */
function killSessions(listener: number): void {
  const procs = execFileSync('ps', ['-e', '-o', 'pid=,ppid=,comm='], { encoding: 'utf8' })
    .trim()
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .map(([pid, ppid, comm]) => ({ pid: Number(pid), ppid: Number(ppid), comm }));
  const sessions: number[] = [];
  let frontier = [listener];
  while (frontier.length) {
    const next = procs.filter((p) => frontier.includes(p.ppid) && p.comm === 'sshd').map((p) => p.pid);
    sessions.push(...next);
    frontier = next;
  }
  for (const pid of sessions) process.kill(pid, 'SIGKILL');
}

describeHosts('lost links: reconnect and roll back, or give up and leave the run to recover', () => {
  const sandbox = useSandbox(1);
  let dir: string;
  let state: string;
  let before: string;
  let frozen: number | undefined;
  const host = () => sandbox().hosts[0]!;
  const snapshot = () => sshOk(sandbox(), host(), SNAPSHOT);
  const journalOf = (runId: string) =>
    readFileSync(join(state, 'runs', `${runId}.ndjson`), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, any>);

  /** Starts the apply; once the journal shows the Slow step under way, `cut` runs. */
  async function applyAndCut(cut: () => void, env: Record<string, string> = {}): Promise<{ r: CliResult; runId: string }> {
    const known = new Set(readdirSync(join(state, 'runs'), { withFileTypes: false }).map(String));
    const run = hostsmith(['apply', join(dir, 'll.yml'), ...sandboxArgs(sandbox(), state), '--hosts', host().name, '--yes'], { env });
    let runId: string | undefined;
    for (let i = 0; i < 400; i++) {
      const f = readdirSync(join(state, 'runs')).find((x) => !known.has(x));
      if (f && readFileSync(join(state, 'runs', f), 'utf8').includes('"step":"Slow"')) {
        runId = f.replace(/\.ndjson$/, '');
        break;
      }
      await new Promise((res) => setTimeout(res, 50));
    }
    if (!runId) throw new Error(`the run never reached the Slow step: ${all(await run)}`);
    await new Promise((res) => setTimeout(res, 500)); // the command is running on the host
    cut();
    return { r: await run, runId };
  }

  beforeAll(async () => {
    dir = fixture({ 'll.yml': RECIPE, 'state/runs/.keep': '' });
    state = join(dir, 'state');
    await sshOk(sandbox(), host(), "rm -rf /srv/ll /srv/ll-mark; printf 'workers=2\\n' > /etc/ll.conf");
    before = await snapshot();
  });

  afterEach(() => {
    if (frozen) process.kill(frozen, 'SIGCONT');
    frozen = undefined;
  });

  it('a session killed mid-step: the run reconnects, stops the orphaned command, and rolls back', async () => {
    const { r, runId } = await applyAndCut(() => killSessions(listenerPid(sandbox().dir)));
    expect(r.code, all(r)).toBe(1);
    expect(all(r)).toContain('the connection was lost while applying');
    expect(all(r)).toMatch(/rollback of Line: rolled back/);
    expect(all(r)).toMatch(/rollback of File: rolled back/);
    // The sleep the dead session left would have made the mark by now: it was stopped.
    await new Promise((res) => setTimeout(res, 6500));
    expect(await snapshot()).toBe(before);
    const entries = journalOf(runId);
    expect(entries.find((e) => e.kind === 'step-finished' && e.step === 'Slow')).toMatchObject({ status: 'failed', error: expect.stringContaining('showed no change') });
    expect(entries.at(-1)).toMatchObject({ kind: 'run-finished', status: 'rolled-back', exitCode: 1 });
  }, 90_000);

  it('sshd stops answering: the host is given up with the recover command; recover finishes once it answers', async () => {
    const { r, runId } = await applyAndCut(
      () => {
        frozen = listenerPid(sandbox().dir);
        process.kill(frozen, 'SIGSTOP');
        killSessions(frozen);
      },
      { HOSTSMITH_RECONNECT_SECONDS: '3' },
    );
    expect(r.code, all(r)).toBe(4);
    expect(all(r)).toContain(`hostsmith recover ${runId}`);
    expect(all(r)).toMatch(/could not be made again within 3 s/);
    const entries = journalOf(runId);
    expect(entries.some((e) => e.kind === 'host-finished' || e.kind === 'run-finished')).toBe(false);
    // The host answers again: the run's changes and lock are there until recover.
    process.kill(frozen!, 'SIGCONT');
    frozen = undefined;
    expect(await snapshot()).not.toBe(before);
    expect((await sshRun(sandbox(), host(), `test -d ${LOCK}`)).code).toBe(0);
    const listed = await hostsmith(['recover', '--state-dir', state]);
    expect(listed.stdout).toContain(`Finish it: hostsmith recover ${runId}`);
    const rec = await hostsmith(['recover', runId, '--yes', '--state-dir', state]);
    expect(rec.code, all(rec)).toBe(0);
    await new Promise((res) => setTimeout(res, 6500));
    expect(await snapshot()).toBe(before);
    expect(journalOf(runId).at(-1)).toMatchObject({ kind: 'run-finished', status: 'recovered', exitCode: 0 });
  }, 120_000);
});
