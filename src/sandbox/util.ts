/**
 * Small process / filesystem helpers shared by the sandbox harness.
 * Nothing here knows about SSH or Debian.
 */
import { spawn, type SpawnOptions } from 'node:child_process';
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { resolve } from 'node:path';

/** Where per-run sandboxes, slot claims and locks live (tmpfs-free, same disk as /tmp). */
export const SANDBOX_ROOT = process.env.HOSTSMITH_SANDBOX_ROOT ?? '/tmp/hostsmith-sandbox';

export function log(msg: string): void {
  process.stderr.write(`[hostsmith-sandbox] ${msg}\n`);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run a command to completion, capturing output. Never throws for a non-zero exit. */
export function run(cmd: string, args: string[], o: { input?: string; env?: NodeJS.ProcessEnv; cwd?: string; onLine?: (line: string) => void } = {}): Promise<RunResult> {
  return new Promise((done, fail) => {
    const opts: SpawnOptions = { stdio: ['pipe', 'pipe', 'pipe'], env: o.env ?? process.env, cwd: o.cwd };
    const child = spawn(cmd, args, opts);
    let stdout = '';
    let stderr = '';
    let partial = '';
    const onData = (chunk: Buffer, sink: 'out' | 'err'): void => {
      const text = chunk.toString('utf8');
      if (sink === 'out') stdout += text;
      else stderr += text;
      if (!o.onLine) return;
      partial += text;
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) o.onLine(line);
    };
    child.stdout?.on('data', (c: Buffer) => onData(c, 'out'));
    child.stderr?.on('data', (c: Buffer) => onData(c, 'err'));
    child.on('error', fail);
    child.on('close', (code, signal) => {
      if (partial && o.onLine) o.onLine(partial);
      done({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(o.input ?? '');
  });
}

/** Like run(), but throws a readable error (with the output tail) when the command fails. */
export async function mustRun(cmd: string, args: string[], what: string, o: Parameters<typeof run>[2] = {}): Promise<RunResult> {
  const r = await run(cmd, args, o);
  if (r.code !== 0) {
    throw new Error(`${what} failed (exit ${r.code}): ${cmd} ${args.join(' ')}\n${tail(r.stderr + r.stdout, 20)}`);
  }
  return r;
}

export function tail(text: string, lines: number): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

export async function tailFile(path: string, lines: number): Promise<string> {
  try {
    return tail(await readFile(path, 'utf8'), lines);
  } catch {
    return `(no ${path})`;
  }
}

// ---------------------------------------------------------------- processes

/** A process identity that survives pid reuse: pid + start time (clock ticks since boot). */
export interface ProcId {
  pid: number;
  start: number;
}

function statFields(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm (field 2) may contain spaces and parens: split after the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

export function procStart(pid: number): number | undefined {
  const f = statFields(pid);
  return f ? Number(f[19]) : undefined;
}

export function procId(pid: number): ProcId {
  const start = procStart(pid);
  if (start === undefined) throw new Error(`process ${pid} vanished before it could be recorded`);
  return { pid, start };
}

/** True while the process runs (a zombie counts as gone; so does a reused pid). */
export function isAlive(p: ProcId): boolean {
  const f = statFields(p.pid);
  if (!f) return false;
  return f[0] !== 'Z' && f[0] !== 'X' && Number(f[19]) === p.start;
}

export function childPids(pid: number): number[] {
  try {
    const tasks = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8');
    return tasks.trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

export function killQuietly(p: ProcId, signal: NodeJS.Signals): void {
  if (!isAlive(p)) return;
  try {
    process.kill(p.pid, signal);
  } catch {
    /* already gone */
  }
}

export async function waitGone(procs: ProcId[], timeoutMs: number): Promise<ProcId[]> {
  const deadline = Date.now() + timeoutMs;
  let left = procs.filter(isAlive);
  while (left.length > 0 && Date.now() < deadline) {
    await sleep(25);
    left = left.filter(isAlive);
  }
  return left;
}

/** The pid-namespace inode of a process ("pid:[4026532…]"), or undefined if it is gone. */
export function pidNamespace(pid: number): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/pid`);
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------- mounts

/** Mount points at or below `dir`, as seen by this process. */
export function mountsUnder(dir: string): string[] {
  const base = resolve(dir);
  const lines = readFileSync('/proc/self/mountinfo', 'utf8').split('\n');
  return lines
    .map((l) => l.split(' ')[4])
    .filter((m): m is string => !!m)
    .map((m) => m.replace(/\\040/g, ' '))
    .filter((m) => m === base || m.startsWith(`${base}/`));
}

/**
 * rm -rf, refusing to descend into anything that is still mounted (a leaked
 * bind mount of /dev under a sandbox dir would otherwise be emptied).
 */
export async function removeTree(dir: string): Promise<void> {
  if (!existsSync(dir)) return;
  const mounted = mountsUnder(dir);
  if (mounted.length > 0) {
    throw new Error(`refusing to delete ${dir}: still mounted: ${mounted.join(', ')}. ` + `Unmount them (umount -R <path>) and retry.`);
  }
  await rm(dir, { recursive: true, force: true, maxRetries: 3 });
}

// ---------------------------------------------------------------- locks

/**
 * Hold an exclusive flock(1) on `lockPath` while `fn` runs. The lock is held by
 * a helper process reading our pipe, so it is released even if we are killed.
 */
export async function withFileLock<T>(lockPath: string, fn: () => Promise<T>, onWait?: () => void): Promise<T> {
  const child = spawn('flock', ['-x', lockPath, 'sh', '-c', 'echo locked; exec cat >/dev/null'], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let errText = '';
  child.stderr.on('data', (c: Buffer) => (errText += c.toString()));
  await new Promise<void>((ok, fail) => {
    const waitTimer = setTimeout(() => onWait?.(), 1000);
    child.stdout.once('data', () => {
      clearTimeout(waitTimer);
      ok();
    });
    child.once('error', (e) => {
      clearTimeout(waitTimer);
      fail(new Error(`cannot run flock for ${lockPath}: ${e.message} (apt-get install util-linux)`));
    });
    child.once('exit', (code) => {
      clearTimeout(waitTimer);
      fail(new Error(`flock ${lockPath} exited with ${code}: ${errText.trim()}`));
    });
  });
  try {
    return await fn();
  } finally {
    child.removeAllListeners('exit');
    const exited = new Promise((r) => child.once('exit', r));
    child.stdin.end();
    await exited;
  }
}

export function readJson<T>(path: string): T | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch {
    return undefined;
  }
}
