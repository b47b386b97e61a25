/**
 * Child processes for the bench: every one is tracked (so a signal handler can end exactly the
 * ones the bench started), hostsmith runs under /usr/bin/time for its CPU and peak RSS, and the
 * floors' CPU comes from this process's waited-for children times (/proc/self/stat).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';

const live = new Set<ChildProcess>();

/** SIGKILLs every child the bench started that is still running (by its pid). */
export function killChildren(): void {
  for (const c of live) {
    try {
      c.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  live.clear();
}

export interface Done {
  code: number;
  stdout: string;
  stderr: string;
}

export function runChild(cmd: string, args: string[], o: { input?: string; env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<Done> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: o.env ?? process.env, cwd: o.cwd });
    live.add(child);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.on('error', (e) => {
      live.delete(child);
      reject(e);
    });
    child.on('close', (code, signal) => {
      live.delete(child);
      resolve({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(o.input ?? '');
  });
}

const TICKS = 100; // USER_HZ on Linux

/** CPU seconds (user + sys) of this process's children that have been waited for, so far. */
export function childCpuSeconds(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // After "pid (comm) ": state is field 3, so field n is f[n - 3]; cutime = 16, cstime = 17.
  return (Number(f[13]) + Number(f[14])) / TICKS;
}

export interface Timed {
  wallS: number;
  userS: number;
  sysS: number;
  maxRssKiB: number;
  result: Done;
}

/** Runs `cmd args` under `/usr/bin/time` (CPU, peak RSS); wall time is measured here, spawn to exit. */
export async function timedChild(timeFile: string, cmd: string, args: string[], o: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<Timed> {
  const t0 = performance.now();
  const result = await runChild('/usr/bin/time', ['-f', '%e %U %S %M', '-o', timeFile, cmd, ...args], o);
  const wallS = (performance.now() - t0) / 1000;
  const last = readFileSync(timeFile, 'utf8').trim().split('\n').pop() ?? '';
  const [, user, sys, rss] = last.split(' ').map(Number);
  if (user === undefined || sys === undefined || rss === undefined || [user, sys, rss].some(Number.isNaN)) {
    throw new Error(`could not read /usr/bin/time output in ${timeFile}: ${JSON.stringify(last)}`);
  }
  return { wallS, userS: user, sysS: sys, maxRssKiB: rss, result };
}

function statTimes(pid: number): { own: number; children: number } {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { own: (Number(f[11]) + Number(f[12])) / TICKS, children: (Number(f[13]) + Number(f[14])) / TICKS };
  } catch {
    return { own: 0, children: 0 };
  }
}

function kids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/**
 * CPU seconds used so far by one sandbox host's processes, from its `unshare` pid: the host's
 * PID 1 (tini: its own time and that of every process it reaped) plus each of its live children
 * (sshd, daemons a recipe started: their own time and that of what they reaped). Compare two
 * readings around a measurement, with no restart of the host in between.
 */
export function hostCpuSeconds(unsharePid: number): number {
  let total = 0;
  for (const init of kids(unsharePid)) {
    const t = statTimes(init);
    total += t.own + t.children;
    for (const k of kids(init)) {
      const c = statTimes(k);
      total += c.own + c.children;
    }
  }
  return total;
}

/** CPU seconds the whole machine has spent so far (every process, this one and the hosts included). */
export function machineCpuSeconds(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal: everything but idle and iowait.
  return (line[0]! + line[1]! + line[2]! + line[5]! + line[6]! + (line[7] ?? 0)) / TICKS;
}
