/**
 * Is the controller of a run still there? A run names its controller (machine name) and pid, in
 * its journal and in its host locks. On this machine, /proc answers; elsewhere nothing can.
 * A pid alone is not enough: after a crash the number may be reused, so the process must also be
 * a hostsmith one that started no later than the run did.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import type { ControllerState } from './replay.js';

export interface ProcessInfo {
  /** The command line, arguments joined by spaces. */
  cmdline: string;
  /** When the process started (ms since the epoch, to the clock tick). */
  startedAtMs: number;
  /** Exited, not yet reaped by its parent. */
  zombie: boolean;
  /** Paths of the files it has open; undefined when this user may not look (another user's process). */
  files?: string[];
}

/** What this machine's /proc says about `pid`; undefined when no such process exists. */
export function processInfo(pid: number): ProcessInfo | undefined {
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The name (field 2) may hold spaces and ")": fields are counted after its last ")".
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[19]); // field 22: start time, in clock ticks after boot
    const btime = Number(/^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'))?.[1]);
    // Linux reports these ticks in USER_HZ, which is 100 on every architecture.
    return { cmdline, startedAtMs: btime * 1000 + ticks * 10, zombie: fields[0] === 'Z', files: openFiles(pid) };
  } catch {
    return undefined;
  }
}

function openFiles(pid: number): string[] | undefined {
  try {
    return readdirSync(`/proc/${pid}/fd`).flatMap((fd) => {
      try {
        return [readlinkSync(`/proc/${pid}/fd/${fd}`)];
      } catch {
        return []; // closed meanwhile
      }
    });
  } catch {
    return undefined;
  }
}

export interface ControllerProbe {
  /** This machine's name, as runs record it. */
  here: string;
  info(pid: number): ProcessInfo | undefined;
}

export const localProbe: ControllerProbe = { here: hostname(), info: processInfo };

/** Slack for comparing a process's start (clock ticks, boot time in whole seconds) with a recorded time. */
const CLOCK_SLACK_MS = 2000;

/**
 * Whether the run that `controller` and `pid` name (recorded at `since`) still runs. A process
 * counts as that run only if it started before `since` (a pid reused by a later process is not
 * the run) and is hostsmith's: its command line says so, or it holds the run's journal open (a
 * program using hostsmith as a library).
 */
export function controllerState(run: { controller: string; pid: number; since: string; runId?: string }, probe: ControllerProbe = localProbe): ControllerState {
  if (run.controller !== probe.here) return { kind: 'elsewhere' };
  const p = probe.info(run.pid);
  if (!p) return { kind: 'gone', why: `pid ${run.pid} is not running` };
  if (p.zombie) return { kind: 'gone', why: `pid ${run.pid} has exited` };
  const journal = run.runId ? `/runs/${run.runId}.ndjson` : undefined;
  if (!/hostsmith/i.test(p.cmdline) && !(journal && p.files?.some((f) => f.endsWith(journal)))) {
    const shown = p.cmdline.length > 80 ? `${p.cmdline.slice(0, 80)}…` : p.cmdline;
    return { kind: 'gone', why: `pid ${run.pid} is now another program (${shown || 'a kernel thread'})` };
  }
  const since = Date.parse(run.since);
  if (Number.isFinite(since) && p.startedAtMs > since + CLOCK_SLACK_MS) {
    return { kind: 'gone', why: `pid ${run.pid} is a later hostsmith process (started ${new Date(p.startedAtMs).toISOString()}, after the run)` };
  }
  return { kind: 'running' };
}
