/**
 * Turns run events into what a person or a script reads. `--json`: one event per line on
 * stdout and nothing else. Otherwise, on a terminal: a spinner per step (one host), or a live line
 * per host below the step lines (several hosts); plain lines elsewhere.
 * Everything a host, a recipe or the journal said goes through escapeText before it is printed
 * (JSON needs no escaping: JSON.stringify escapes control characters).
 */
import type { Ora } from 'ora';
import type { RunEvent } from '../engine/events.js';
import type { RunReport } from '../engine/fleet.js';
import { escapeText } from './escape.js';
import type { HostBoard } from './progress.js';

/** Foreign text on one line (names, summaries, facts); and where it may span lines (errors). */
const one = (s: unknown): string => escapeText(String(s));
const multi = (s: unknown): string => escapeText(String(s), { multiline: true });

export interface OutputOptions {
  json: boolean;
  color: boolean;
  verbose: boolean;
  /** Spinners only make sense on a terminal. */
  tty: boolean;
  out?: NodeJS.WritableStream;
  err?: NodeJS.WritableStream;
}

/** As Terraform shows a plan: + create, ~ change, - remove (and ? known after apply). */
const ACTION_SYMBOL: Record<string, string> = { create: '+', change: '~', remove: '-' };
const ACTION_WORD: Record<string, string> = { create: 'will create', change: 'will change', remove: 'will remove' };

/** What a plan would do on a host, counted by kind. */
export interface PlanTally {
  create: number;
  change: number;
  remove: number;
  unknown: number;
}

/** "2 to add, 3 to change, 1 to remove, 1 known after apply". */
export function tallyText(t: PlanTally): string {
  return [`${t.create} to add`, `${t.change} to change`, `${t.remove} to remove`, ...(t.unknown ? [`${t.unknown} known after apply`] : [])].join(', ');
}

const SYMBOL: Record<string, string> = {
  changed: '~',
  planned: '~',
  unchanged: '=',
  skipped: '-',
  failed: '✖',
  'rolled-back': '↺',
  'rollback-failed': '✖',
};

function secs(ms: number): string {
  return `${(ms / 1000).toFixed(1)}s`;
}

export class Output {
  private spinner: Ora | undefined;
  private hostCount = 0;
  /** Per host, what the plan would do, by kind (from the step events). */
  readonly tallies = new Map<string, PlanTally>();
  /** What rollbacks left in place and said so (a reboot), per host: the closing lines repeat it. */
  private readonly kept = new Map<string, string[]>();

  private tally(host: string, kind: keyof PlanTally): void {
    const t = this.tallies.get(host) ?? { create: 0, change: 0, remove: 0, unknown: 0 };
    t[kind]++;
    this.tallies.set(host, t);
  }
  private mode: 'plan' | 'apply' | 'undo' | 'recover' = 'apply';
  private readonly out: NodeJS.WritableStream;
  private readonly err: NodeJS.WritableStream;

  /** ora, loaded only for a terminal (spinners): runs from cron or with --json never load it. */
  private ora: typeof import('ora').default | undefined;
  /** The live per-host lines (several hosts on a terminal), and what draws them; loaded as ora is. */
  private board: HostBoard | undefined;
  private boards: { HostBoard: typeof HostBoard; createLogUpdate: typeof import('log-update').createLogUpdate } | undefined;

  constructor(private readonly o: OutputOptions) {
    this.out = o.out ?? process.stdout;
    this.err = o.err ?? process.stderr;
    if (o.tty && !o.json) {
      void import('ora').then(
        (m) => (this.ora = m.default),
        () => {},
      );
      void Promise.all([import('./progress.js'), import('log-update')]).then(
        ([p, l]) => {
          this.boards = { HostBoard: p.HostBoard, createLogUpdate: l.createLogUpdate };
          // A run that started before the board's code had loaded gets its board now.
          if (this.boardHosts && !this.board) this.startBoard(this.boardHosts);
        },
        () => {},
      );
    }
  }

  /** The hosts of the run in progress that wants a board (several hosts on a terminal). */
  private boardHosts: string[] | undefined;

  private startBoard(hosts: string[]): void {
    if (!this.boards) return;
    const stream = this.out as NodeJS.WriteStream;
    this.board = new this.boards.HostBoard(hosts, this.boards.createLogUpdate(stream), { color: this.o.color, columns: stream.columns || 80 });
  }

  /** Takes the live lines off the screen; the run's output ends with the summary. */
  end(): void {
    this.boardHosts = undefined;
    this.board?.close();
    this.board = undefined;
  }

  private paint(code: number, s: string): string {
    return this.o.color ? `\x1b[${code}m${s}\x1b[0m` : s;
  }

  /** Human text: stdout normally, stderr when stdout carries JSON. */
  say(line = ''): void {
    const write = () => (this.o.json ? this.err : this.out).write(line + '\n');
    if (this.board) return this.board.above(write);
    if (this.spinner) this.spinner.clear();
    write();
    if (this.spinner) this.spinner.render();
  }

  warn(line: string): void {
    this.stopSpinner();
    const write = () => this.err.write(line + '\n');
    if (this.board) this.board.above(write);
    else write();
  }

  private stopSpinner(): void {
    this.spinner?.stop();
    this.spinner = undefined;
  }

  event(e: RunEvent): void {
    if (this.o.json) {
      if (e.event !== 'step-started') this.out.write(JSON.stringify(e) + '\n');
      return;
    }
    const prefix = (host: string) => (this.hostCount > 1 ? `${one(host)}  ` : '  ');
    switch (e.event) {
      case 'run-started':
        this.mode = e.mode;
        this.hostCount = e.hosts.length;
        this.end();
        if (this.o.tty && this.hostCount > 1) {
          this.boardHosts = e.hosts;
          this.startBoard(e.hosts);
        }
        this.say(
          e.mode === 'recover'
            ? `Recover of run ${one(e.runId)}: recipe ${one(e.recipe)} on ${one(e.hosts.join(', ') || 'no host')}`
            : `${e.mode === 'plan' ? 'Plan' : e.mode === 'undo' ? `Undo of run ${one(e.undoes ?? '?')}` : 'Apply'}: recipe ${one(e.recipe)} on ${one(e.hosts.join(', '))} (run ${one(e.runId)})`,
        );
        break;
      case 'host-connected': {
        const f = e.facts as { os?: { id?: string; version_id?: string }; arch?: string; user?: string };
        this.say(`${one(e.host)}: connected as ${one(f.user)} (${one(f.os?.id)} ${one(f.os?.version_id)}, ${one(f.arch)})`);
        break;
      }
      case 'batch-started':
        this.stopSpinner();
        this.say(`Batch ${e.batch} of ${e.of}: ${one(e.hosts.join(', '))}`);
        this.board?.batch(e.hosts);
        break;
      case 'step-started':
        this.board?.stepStarted(e.host, e.step, e.index, e.of);
        if (this.o.tty && this.hostCount === 1 && this.ora) this.spinner = this.ora({ text: one(e.step), stream: this.out as NodeJS.WriteStream, discardStdin: false }).start();
        break;
      case 'step-finished': {
        // Known after apply: its summary says so, with the outcome against the host as it is now.
        const dynamic = e.status === 'planned' && e.dynamic === true;
        const label = dynamic ? '' : `${e.status === 'planned' ? ACTION_WORD[e.action ?? 'change'] : e.status}: `;
        const symbol = dynamic ? '?' : (e.status === 'planned' || e.status === 'changed') && e.action ? ACTION_SYMBOL[e.action] : (SYMBOL[e.status] ?? ' ');
        if (e.status === 'failed' && this.mode === 'apply') this.board?.rollingBack(e.host);
        if (e.status === 'planned' && !e.handler) this.tally(e.host, dynamic ? 'unknown' : (e.action ?? 'change'));
        const irr = e.irreversible ? this.paint(33, ' [irreversible: no rollback]') : '';
        const color = e.status === 'failed' ? 31 : e.status === 'changed' || e.status === 'planned' ? 33 : 32;
        const line = `${prefix(e.host)}${symbol} ${one(e.step)}  ${this.paint(color, label)}${one(e.summary)}${irr}${this.mode !== 'plan' ? `  (${secs(e.durationMs)})` : ''}`;
        if (this.spinner) {
          if (e.status === 'failed') this.spinner.fail(line.trimStart());
          else this.spinner.stopAndPersist({ symbol, text: line.trimStart().slice(2) });
          this.spinner = undefined;
        } else this.say(line);
        if (e.error) this.say(`${prefix(e.host)}    error: ${multi(e.error)}`);
        if (e.diff && (this.mode === 'plan' || this.o.verbose)) this.say(this.indentDiff(e.diff, prefix(e.host) + '    '));
        break;
      }
      case 'rollback-finished':
        this.stopSpinner();
        if (e.note) this.kept.set(e.host, [...(this.kept.get(e.host) ?? []), `${e.step}: ${e.note}`]);
        this.board?.rollingBack(e.host, e.step);
        this.say(
          `${prefix(e.host)}${SYMBOL[e.status]} rollback of ${one(e.step)}: ${e.status === 'rolled-back' ? this.paint(32, e.note ? one(e.note) : 'rolled back') : this.paint(31, `FAILED: ${multi(e.error)}`)}`,
        );
        break;
      case 'watchdog':
        this.stopSpinner();
        this.say(`${one(e.host)}: ${this.paint(e.what === 'confirmed' ? 32 : e.what === 'armed' ? 36 : 33, multi(e.message))}`);
        break;
      case 'host-finished':
        this.stopSpinner();
        this.board?.finished(e.host, e.status, e, e.durationMs);
        // An ok host can still carry an error (its lock could not be released): say it too.
        if (e.error) this.say(`${one(e.host)}: ${this.paint(e.status === 'ok' ? 33 : 31, e.status)}: ${multi(bare(e.host, e.error))}`);
        break;
      case 'run-finished':
        this.stopSpinner();
        this.end();
        break;
    }
  }

  private indentDiff(diff: string, pad: string): string {
    return diff
      .trimEnd()
      .split('\n')
      .map(one)
      .map((l) => pad + (l.startsWith('+') && !l.startsWith('+++') ? this.paint(32, l) : l.startsWith('-') && !l.startsWith('---') ? this.paint(31, l) : l))
      .join('\n');
  }

  /** The closing table and what to do next. */
  summary(r: RunReport, o: { confirming?: boolean } = {}): void {
    if (this.o.json) return;
    const rows = Object.entries(r.hosts);
    this.say('');
    const head = ['host', 'status', 'changed', 'unchanged', 'skipped', 'failed', 'rolled back', 'time'];
    const body = rows.map(([h, s]) => [one(h), s.status, String(s.changed), String(s.unchanged), String(s.skipped), String(s.failed), String(s.rolledBack), secs(s.durationMs)]);
    if (r.mode === 'plan') {
      head[2] = 'to change';
      head.splice(6, 1);
      body.forEach((b) => b.splice(6, 1));
    }
    const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
    const fmt = (cells: string[]) =>
      cells
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd();
    this.say(fmt(head));
    body.forEach((b) => this.say(fmt(b)));
    this.say('');
    if (r.mode === 'plan' && this.tallies.size && !o.confirming) {
      const total: PlanTally = { create: 0, change: 0, remove: 0, unknown: 0 };
      for (const [host, t] of this.tallies) {
        if (rows.length > 1) this.say(`${one(host)}: ${tallyText(t)}`);
        for (const k of Object.keys(total) as Array<keyof PlanTally>) total[k] += t[k];
      }
      this.say(`Plan: ${tallyText(total)}${rows.length > 1 ? ` (on ${this.tallies.size} of ${rows.length} hosts)` : ''}.`);
    } else if (r.mode === 'plan' && this.tallies.size) {
      const total: PlanTally = { create: 0, change: 0, remove: 0, unknown: 0 };
      for (const t of this.tallies.values()) for (const k of Object.keys(total) as Array<keyof PlanTally>) total[k] += t[k];
      this.say(`${tallyText(total)}.`);
    }
    // While apply asks for confirmation, "run hostsmith apply" would be the wrong advice.
    for (const line of nextSteps(r)) if (!(o.confirming && line.startsWith('Plan:'))) this.say(line);
    // "As before the run" is true of what could be put back; what could not (a reboot) is said beside it.
    for (const [host, notes] of this.kept) this.say(`${one(host)}: not undone by the rollback: ${notes.map(one).join('; ')}`);
  }
}

/** A host's error without the host name in front, for lines that already start with it. */
function bare(host: string, error: string | undefined): string {
  const e = error ?? '';
  return e.startsWith(`${host}: `) ? e.slice(host.length + 2) : e;
}

/** What happened and what to do now, in words, for the person reading at 3 a.m. */
export function nextSteps(r: RunReport): string[] {
  const out: string[] = [];
  const journal = r.journalFile ? ` Journal: ${one(r.journalFile)}` : '';
  for (const [host, s] of Object.entries(r.hosts)) {
    const h = one(host);
    const said = multi(bare(host, s.error));
    switch (s.status) {
      case 'rolled-back':
        out.push(
          s.cause
            ? `${h}: ${s.cause.host ? `rolled back because ${one(s.cause.host)} failed${s.cause.step ? ` at step "${one(s.cause.step)}"` : ''}` : 'rolled back because the run was interrupted'} (rollback scope); its ${s.rolledBack} completed step(s) were taken back, so the host is as before the run.`
            : `${h}: a step failed; all ${s.rolledBack} completed step(s) were rolled back, so the host is as before the run. Fix the cause above and run again.`,
        );
        break;
      case 'failed':
        out.push(r.mode === 'plan' ? `${h}: the plan found a problem: ${said}` : `${h}: failed before changing anything. ${said}`.trim());
        break;
      case 'rollback-incomplete':
        out.push(`${h}: ROLLBACK INCOMPLETE — some changes are still on the host. See \`hostsmith show ${one(r.runId)}\` for what is left and undo it by hand.${journal}`);
        break;
      case 'unreachable':
        // A host given up mid-run says so itself, with the recover command that finishes it.
        out.push(s.givenUp ? `${h}: LINK LOST — ${said}` : `${h}: not reached — nothing was changed there.`);
        break;
      case 'interrupted':
        out.push(`${h}: interrupted; ${s.rolledBack} completed step(s) were rolled back.`);
        break;
      case 'stale':
        out.push(`${h}: STALE — the host is not as the plan expects, so nothing was changed on any host. ${said} Make a new plan (hostsmith plan … --out …) and review it.`);
        break;
      case 'not-started':
        out.push(`${h}: not started — ${said}`);
        break;
    }
  }
  if (r.mode === 'plan') {
    const n = Object.values(r.hosts).reduce((a, s) => a + s.changed, 0);
    if (r.exitCode !== 0) out.push(`Plan: ${n} step(s) to change, but fix the problems above before applying. Nothing was changed.`);
    else out.push(n ? `Nothing was changed; run \`hostsmith apply\` to make it so (${n} step(s) in all).` : 'Plan: nothing to change.');
  } else if (r.status === 'ok') {
    out.push(`Done (run ${one(r.runId)}).`);
  }
  return out;
}
