import type { Command } from 'commander';
import { InputError } from '../../errors.js';
import { listRunIds, readRun, type JournalEntry } from '../../engine/journal.js';
import { stateDirOf, type GlobalOptions } from '../context.js';
import { escapeText } from '../escape.js';
import { outputFor, type Ctx } from '../shared.js';

export interface RunSummary {
  runId: string;
  time: string;
  recipe: string;
  hosts: string[];
  status: string;
  exitCode: number | null;
  changed: number;
}

/** A run with no run-finished entry is still open: running now, or left by a crash. */
export function summarize(runId: string, entries: JournalEntry[]): RunSummary | undefined {
  const start = entries.find((e) => e.kind === 'run-started');
  if (!start || start.kind !== 'run-started') return undefined;
  const end = entries.find((e) => e.kind === 'run-finished');
  const changed = entries.filter((e) => e.kind === 'step-finished' && e.status === 'changed').length;
  return {
    runId,
    time: start.time,
    recipe: start.recipe,
    hosts: start.hosts,
    status: end && end.kind === 'run-finished' ? end.status : 'open',
    exitCode: end && end.kind === 'run-finished' ? end.exitCode : null,
    changed,
  };
}

export function registerHistory(program: Command, ctx: Ctx): void {
  program
    .command('history')
    .description('past runs from the journal, newest first')
    .option('--host <name>', 'only runs that touched this host')
    .option('--limit <n>', 'at most this many runs', '20')
    .action(async (o: { host?: string; limit: string }, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions>();
      const limit = Number(o.limit);
      if (!Number.isInteger(limit) || limit < 1) throw new InputError(`--limit: "${o.limit}" is not a whole number ≥ 1`);
      const dir = stateDirOf(g);
      const ids = (await listRunIds(dir)).reverse();
      const rows: RunSummary[] = [];
      for (const id of ids) {
        if (rows.length >= limit) break;
        const s = summarize(id, await readRun(dir, id));
        if (s && (!o.host || s.hosts.includes(o.host))) rows.push(s);
      }
      const out = outputFor(g);
      if (g.json) rows.forEach((r) => process.stdout.write(JSON.stringify({ event: 'run', ...r }) + '\n')); // time: when the run started
      else if (!rows.length) out.say(`no runs recorded in ${escapeText(dir)}`);
      else {
        out.say(['run', 'started', 'recipe', 'hosts', 'status', 'changed'].join('\t'));
        // Journal text, shown escaped; a tab inside a cell would shift the columns, so it is escaped too.
        rows.forEach((r) => out.say([r.runId, r.time, r.recipe, r.hosts.join(','), r.status, r.changed].map((c) => escapeText(String(c), { tabs: false })).join('\t')));
      }
      ctx.exit(0);
    });
}
