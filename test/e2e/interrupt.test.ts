/**
 * Ctrl-C typed on a real terminal while a step's spinner runs, and a stdout that closes under a
 * run (`| head -1`), against a real host. The spinner must not take the terminal into raw mode
 * (which kept Ctrl-C from becoming SIGINT), and a write to a closed pipe must not stop the run half
 * way: either would leave changes, the host lock and an open journal behind.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import type { Sandbox, SandboxHost } from '../hosts/hosts.js';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { sshOk, sshRun } from '../hosts/ssh.js';
import { fixture, hostsmith, ROOT, sandboxArgs } from './cli.js';

const BIN = join(ROOT, 'bin/hostsmith.js');
const q = (a: string) => `'${a.replace(/'/g, `'\\''`)}'`;

/** One thing to type: when `when` shows up on the screen after the previous match, wait `delayMs`, then type `send`. */
interface Key {
  when: RegExp;
  send: string;
  delayMs?: number;
}

/**
 * The CLI on a real pseudo-terminal (script(1), as onTerminal in cli.ts), with keys typed in
 * order, each matched only against what the screen showed after the previous one (so a step name
 * in the plan does not count as its spinner). `typed` is how many keys were sent.
 */
function onPty(args: string[], keys: Key[], o: { env?: Record<string, string>; cwd?: string; timeoutMs?: number } = {}): Promise<{ code: number; screen: string; typed: number }> {
  const cmd = [process.execPath, BIN, ...args].map(q).join(' ');
  const env: Record<string, string | undefined> = { ...process.env, TERM: 'xterm', NO_COLOR: '1', ...o.env };
  delete env.CI; // ora draws no spinner (and never touches stdin) under CI
  return new Promise((res, rej) => {
    // exec: hostsmith itself is the pty's child, so the exit status is its own and no shell
    // between them takes part in the Ctrl-C that the test types.
    const child = spawn('script', ['-qfec', `stty cols 120 rows 40; exec ${cmd}`, '/dev/null'], { env, cwd: o.cwd ?? ROOT });
    let screen = '';
    let from = 0;
    let next = 0;
    let waiting = false;
    const look = () => {
      if (waiting || next >= keys.length) return;
      const k = keys[next]!;
      const m = k.when.exec(screen.slice(from));
      if (!m) return;
      from += m.index + m[0].length;
      waiting = true;
      setTimeout(() => {
        child.stdin.write(k.send);
        next++;
        waiting = false;
        look();
      }, k.delayMs ?? 0);
    };
    child.stdout.on('data', (d: Buffer) => {
      screen += d.toString();
      look();
    });
    child.on('error', rej);
    const kill = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 60_000);
    child.on('close', (code) => {
      clearTimeout(kill);
      res({ code: code ?? -1, screen, typed: next });
    });
  });
}

/** Runs a shell command line; resolves with its exit code and output. */
function shell(line: string, timeoutMs = 60_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((res, rej) => {
    const child = spawn('sh', ['-c', line], { cwd: ROOT, env: { ...process.env, NO_COLOR: '1' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', rej);
    const kill = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(kill);
      res({ code: code ?? -1, stdout, stderr });
    });
  });
}

const RUN_ID = /Apply: recipe \S+ on \S+ \(run ([^)\s]+)\)/;
/** The run id of the apply on the screen (the plan before it has its own). */
const applyRunId = (screen: string) => RUN_ID.exec(screen)?.[1];
/** The end of a screen for a failure message: no escape sequences, each spinner run shown by its last frame. */
const tail = (s: string) =>
  s
    .replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '')
    .replace(/(?:[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] [^⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏\r\n]*)+/g, (run) => run.slice(run.search(/[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏][^⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]*$/)))
    .slice(-2500);

async function historyOf(state: string, runId: string): Promise<Record<string, any> | undefined> {
  const h = await hostsmith(['history', '--state-dir', state, '--json']);
  expect(h.code, h.stderr).toBe(0);
  return h.events.find((e) => e.runId === runId);
}

/** The journal's entries for one run (NDJSON in <state>/runs/). */
function journalOf(state: string, runId: string): Array<Record<string, any>> {
  return readFileSync(join(state, 'runs', `${runId}.ndjson`), 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l));
}

const noLock = async (sb: Sandbox, h: SandboxHost) => (await sshRun(sb, h, 'ls /run/hostsmith/lock')).code;
const exists = async (sb: Sandbox, h: SandboxHost, path: string) => (await sshRun(sb, h, `test -e ${path}`)).code === 0;

describeHosts('Ctrl-C on a terminal, and a closed stdout, during a run', () => {
  const sandbox = useSandbox(1);
  const dirs: string[] = [];
  const temp = (prefix: string) => {
    const d = mkdtempSync(join(tmpdir(), prefix));
    dirs.push(d);
    return d;
  };
  afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

  // With the confirmation, the prompt has read stdin before the spinner starts; with --yes on a
  // terminal nothing has (ora's raw mode then kept the Ctrl-C byte unread: no SIGINT at all).
  it.each([
    ['after "y" at the confirmation', false],
    ['with --yes on the terminal', true],
  ])('one Ctrl-C while a step spinner runs (%s): exit 130, the completed steps rolled back, no lock, the run closed', async (_how, yes) => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const dir = fixture({
      'r.yml': `name: int-one
steps:
  - name: Write A
    file: { path: /etc/hs-int-a, content: "a\\n" }
  - name: Slow wait
    command: { run: "sleep 5", rollback: "true" }
`,
    });
    dirs.push(dir);
    const state = temp('hostsmith-state-');
    const r = await onPty(
      ['apply', join(dir, 'r.yml'), '--hosts', h.name, ...(yes ? ['--yes'] : []), ...sandboxArgs(sb, state)],
      [
        ...(yes ? [] : [{ when: /Apply these 2 change\(s\)\?/, send: 'y\r' }]),
        // The spinner of step 2 (after the confirmation: the plan above names the step too).
        { when: /Slow wait/, send: '\x03', delayMs: 700 },
      ],
      { timeoutMs: 40_000 },
    );
    expect(r.typed, tail(r.screen)).toBe(yes ? 1 : 2);
    expect(r.code, tail(r.screen)).toBe(130);
    expect(r.screen).toContain('Interrupted: stopping after the step in flight, then rolling back completed steps.');
    expect(r.screen).toMatch(/rollback of Write A: rolled back/);
    expect(r.screen).toMatch(/h1: interrupted; 2 completed step\(s\) were rolled back\./);
    expect(await exists(sb, h, '/etc/hs-int-a')).toBe(false);
    expect(await noLock(sb, h)).not.toBe(0);
    const runId = applyRunId(r.screen);
    expect(runId, tail(r.screen)).toBeDefined();
    expect(await historyOf(state, runId!)).toMatchObject({ status: 'interrupted', exitCode: 130, left: 0 });
  });

  it('a second Ctrl-C during the rollback leaves the rest to recover, which finishes it', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const dir = fixture({
      'r.yml': `name: int-two
steps:
  - name: Keep B0
    file: { path: /etc/hs-int-b0, content: "b0\\n" }
  - name: Write B
    command: { run: "echo b > /etc/hs-int-b", rollback: "sleep 4; rm -f /etc/hs-int-b" }
  - name: Slow wait
    command: { run: "sleep 5", rollback: "true" }
`,
    });
    dirs.push(dir);
    const state = temp('hostsmith-state-');
    const r = await onPty(
      ['apply', join(dir, 'r.yml'), '--hosts', h.name, ...sandboxArgs(sb, state)],
      [
        { when: /Apply these 3 change\(s\)\?/, send: 'y\r' },
        { when: /Slow wait/, send: '\x03', delayMs: 700 },
        // Slow wait is taken back at once; then Write B's rollback sleeps 4 s: the second press lands in it.
        { when: /rollback of Slow wait: rolled back/, send: '\x03', delayMs: 700 },
      ],
    );
    expect(r.typed, tail(r.screen)).toBe(3);
    // README, "Ctrl-C": a second one stops the rollback (exit 3) and leaves the run open in the journal.
    expect(r.code, tail(r.screen)).toBe(3);
    expect(r.screen).toContain('Interrupted again: stopping the rollback.');
    const runId = applyRunId(r.screen);
    expect(runId, tail(r.screen)).toBeDefined();
    // The rollback in flight (Write B) ran to its end; the older step was not taken back.
    expect(await exists(sb, h, '/etc/hs-int-b0')).toBe(true);
    expect(journalOf(state, runId!).some((e) => e.kind === 'run-finished')).toBe(false);
    const open = await historyOf(state, runId!);
    expect(open?.status, JSON.stringify(open)).toMatch(/^(abandoned|crashed)$/);
    expect(open?.left).toBeGreaterThanOrEqual(1);

    const rec = await hostsmith(['recover', runId!, '--yes', '--known-hosts', sb.knownHostsPath, '--state-dir', state]);
    expect(rec.code, rec.stdout + rec.stderr).toBe(0);
    expect(await exists(sb, h, '/etc/hs-int-b0'), `recover said:\n${rec.stdout}${rec.stderr}`).toBe(false);
    expect(await exists(sb, h, '/etc/hs-int-b')).toBe(false);
    expect(await noLock(sb, h)).not.toBe(0);
    expect(await historyOf(state, runId!)).toMatchObject({ status: 'recovered', left: 0 });
  });

  it('Ctrl-C during bootstrap while a step runs: exit 130, rolled back, no lock, nothing saved', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const home = temp('hostsmith-home-');
    const dir = fixture({
      'r.yml': `name: int-boot
steps:
  - name: Write C
    file: { path: /etc/hs-int-c, content: "c\\n" }
  - name: Slow wait
    command: { run: "sleep 5", rollback: "true" }
`,
    });
    dirs.push(dir);
    mkdirSync(join(dir, 'state'));
    const state = join(dir, 'state');
    const r = await onPty(
      ['bootstrap', 'r.yml', '--known-hosts', sb.knownHostsPath, '--state-dir', state],
      [
        { when: /Host to set up/, send: `root@${h.address}:${h.port}\r` },
        // An empty HOME: no agent, no key found, so the password is the default; one up is the key file.
        { when: /How do you log in/, send: '\x1b[A\r' },
        { when: /Private key file/, send: `${sb.keyPath}\r` },
        { when: /Apply these 2 change\(s\)\? \(Y\/n\)/, send: 'y\r' },
        { when: /Slow wait/, send: '\x03', delayMs: 700 },
      ],
      { env: { HOME: home, SSH_AUTH_SOCK: '', XDG_CONFIG_HOME: join(home, '.config') }, cwd: dir },
    );
    expect(r.typed, tail(r.screen)).toBe(5);
    expect(r.code, tail(r.screen)).toBe(130);
    expect(r.screen).toContain('Interrupted: stopping after the step in flight');
    expect(r.screen).toMatch(/interrupted; 2 completed step\(s\) were rolled back\./);
    expect(r.screen).not.toContain('to an inventory, so later runs');
    expect(await exists(sb, h, '/etc/hs-int-c')).toBe(false);
    expect(await noLock(sb, h)).not.toBe(0);
    const runId = applyRunId(r.screen);
    expect(runId, tail(r.screen)).toBeDefined();
    expect(await historyOf(state, runId!)).toMatchObject({ status: 'interrupted', exitCode: 130, left: 0 });
    expect(readdirSync(dir).sort()).toEqual(['r.yml', 'state']);
  });

  it('stdout closed under the run (| head -1): every step applied, no lock, the journal closed, no EPIPE', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const dir = fixture({
      'r.yml': `name: int-pipe
steps:
  - name: Pause
    command: { run: "sleep 1; echo p > /etc/hs-pipe-0", creates: /etc/hs-pipe-0, rollback: "rm -f /etc/hs-pipe-0" }
  - name: Pipe one
    file: { path: /etc/hs-pipe-1, content: "1\\n" }
  - name: Pipe two
    file: { path: /etc/hs-pipe-2, content: "2\\n" }
  - name: Pipe three
    command: { run: "sleep 1; echo 3 > /etc/hs-pipe-3", creates: /etc/hs-pipe-3, rollback: "rm -f /etc/hs-pipe-3" }
`,
    });
    dirs.push(dir);
    const state = temp('hostsmith-state-');
    const exitFile = join(dir, 'exit');
    const cli = [process.execPath, BIN, 'apply', join(dir, 'r.yml'), '--hosts', h.name, '--yes', ...sandboxArgs(sb, state)].map(q).join(' ');
    // The pipeline waits for hostsmith too; its own exit code goes to a file (sh has no pipefail).
    const r = await shell(`{ ${cli}; echo $? > ${q(exitFile)}; } | head -1`);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout, r.stderr).toMatch(/^Apply: recipe int-pipe on h1 \(run [^)\s]+\)\n$/);
    expect(r.stderr).not.toMatch(/EPIPE/);
    expect(r.stderr).not.toMatch(/^\s+at /m);
    expect(readFileSync(exitFile, 'utf8'), r.stderr).toBe('0\n');
    const runId = applyRunId(r.stdout)!;
    expect(await sshOk(sb, h, 'cat /etc/hs-pipe-0 /etc/hs-pipe-1 /etc/hs-pipe-2 /etc/hs-pipe-3')).toBe('p\n1\n2\n3\n');
    expect(await noLock(sb, h)).not.toBe(0);
    const entries = journalOf(state, runId);
    expect(entries.at(-1)).toMatchObject({ kind: 'run-finished', status: 'ok', exitCode: 0 });

    const again = await hostsmith(['apply', join(dir, 'r.yml'), '--hosts', h.name, '--yes', ...sandboxArgs(sb, state)]);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(await noLock(sb, h)).not.toBe(0);
  });
});
