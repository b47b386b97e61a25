/**
 * Live progress for a run on several hosts, on a terminal: one line per host at the bottom of
 * the screen (step k of n, its name, how long it has been running; a finished host's outcome),
 * redrawn in place while the step lines scroll above it. One host keeps its spinner instead;
 * without a terminal, plain lines per event are printed and this is never loaded.
 */
import type { createLogUpdate } from 'log-update';
import type { Counts, HostStatus } from '../engine/events.js';
import { escapeText } from './escape.js';

type LogUpdate = ReturnType<typeof createLogUpdate>;

interface HostLine {
  /** What the host is doing now. */
  phase: 'waiting' | 'connecting' | 'step' | 'rollback' | 'done';
  step?: string;
  index?: number;
  of?: number;
  since: number;
  /** Set once the host is finished. */
  outcome?: { status: HostStatus; counts: Counts; durationMs: number };
}

const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
/** Redraw often enough that the seconds count visibly, rarely enough to cost nothing. */
const TICK_MS = 250;

const secs = (ms: number) => `${(ms / 1000).toFixed(1)}s`;

export class HostBoard {
  private readonly lines = new Map<string, HostLine>();
  private readonly width: number;
  private readonly timer: NodeJS.Timeout;
  private frame = 0;
  private closed = false;

  constructor(
    hosts: string[],
    private readonly log: LogUpdate,
    private readonly o: { color: boolean; columns: number; now?: () => number },
  ) {
    const now = this.now();
    for (const h of hosts) this.lines.set(h, { phase: 'connecting', since: now });
    this.width = Math.min(24, Math.max(4, ...hosts.map((h) => escapeText(h).length)));
    this.timer = setInterval(() => {
      this.frame = (this.frame + 1) % FRAMES.length;
      this.render();
    }, TICK_MS);
    // The board never keeps a finished run alive.
    this.timer.unref();
    this.render();
  }

  private now(): number {
    return this.o.now ? this.o.now() : Date.now();
  }

  private set(host: string, patch: Partial<HostLine>): void {
    const line = this.lines.get(host);
    if (!line || line.phase === 'done') return;
    Object.assign(line, { since: this.now() }, patch);
    this.render();
  }

  /** A batch starts: its hosts connect, the hosts of later batches wait. */
  batch(hosts: string[]): void {
    const now = this.now();
    for (const [h, l] of this.lines) {
      if (l.phase === 'done') continue;
      if (hosts.includes(h)) Object.assign(l, { phase: 'connecting', since: now });
      else if (l.phase === 'connecting') l.phase = 'waiting';
    }
    this.render();
  }

  stepStarted(host: string, step: string, index?: number, of?: number): void {
    this.set(host, { phase: 'step', step, index, of });
  }

  /** Rolling back; `step` is the last step taken back so far. */
  rollingBack(host: string, step?: string): void {
    const l = this.lines.get(host);
    if (l?.phase === 'rollback' && !step) return;
    this.set(host, { phase: 'rollback', step, index: undefined, of: undefined });
  }

  finished(host: string, status: HostStatus, counts: Counts, durationMs: number): void {
    const line = this.lines.get(host);
    if (!line) return;
    line.phase = 'done';
    line.outcome = { status, counts, durationMs };
    this.render();
  }

  /** Lines that stay (a step's result, a warning): written above the board, which is redrawn below them. */
  above(write: () => void): void {
    if (!this.closed) this.log.clear();
    write();
    this.render();
  }

  /** Takes the board off the screen (the summary table that follows says how each host ended). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.log.clear();
    this.log.done();
  }

  private paint(code: number, s: string): string {
    return this.o.color ? `\x1b[${code}m${s}\x1b[0m` : s;
  }

  /** One host's line, cut to the terminal's width so that the board never wraps. */
  lineOf(host: string): string {
    const l = this.lines.get(host)!;
    const name = escapeText(host).slice(0, this.width).padEnd(this.width);
    const room = Math.max(10, this.o.columns - this.width - 4);
    const elapsed = secs(this.now() - l.since);
    const cut = (s: string) => (s.length > room ? `${s.slice(0, room - 1)}…` : s);
    switch (l.phase) {
      case 'waiting':
        return `${name}  ${this.paint(2, 'waiting')}`;
      case 'connecting':
        return `${name}  ${FRAMES[this.frame]} ${cut(`connecting  ${elapsed}`)}`;
      case 'step': {
        const where = l.index !== undefined && l.of !== undefined ? `step ${l.index}/${l.of}` : 'handler';
        return `${name}  ${FRAMES[this.frame]} ${cut(`${where}  ${escapeText(l.step ?? '')}  ${elapsed}`)}`;
      }
      case 'rollback':
        return `${name}  ${FRAMES[this.frame]} ${this.paint(33, cut(`rolling back${l.step ? `  (${escapeText(l.step)} done)` : ''}  ${elapsed}`))}`;
      case 'done': {
        const o = l.outcome!;
        const good = o.status === 'ok';
        const mark = this.paint(good ? 32 : 31, good ? '✔' : '✖');
        const c = o.counts;
        const counts = [
          `${c.changed} changed`,
          `${c.unchanged} unchanged`,
          ...(c.skipped ? [`${c.skipped} skipped`] : []),
          ...(c.failed ? [`${c.failed} failed`] : []),
          ...(c.rolledBack ? [`${c.rolledBack} rolled back`] : []),
        ].join(', ');
        return `${name}  ${mark} ${this.paint(good ? 32 : 31, o.status)}  ${cut(`${counts}  ${secs(o.durationMs)}`)}`;
      }
    }
  }

  private render(): void {
    if (this.closed) return;
    this.log([...this.lines.keys()].map((h) => this.lineOf(h)).join('\n'));
  }
}
