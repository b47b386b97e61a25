import type { Command } from 'commander';
import { openRunController } from '../../engine/recover.js';
import { InputError } from '../../errors.js';
import { localProbe, type ControllerProbe } from '../../engine/controller.js';
import { formatProblem, listRunIds, readJournal } from '../../engine/journal.js';
import { replay, runPhase, type ControllerState, type RunPhase, type RunState } from '../../engine/replay.js';
import { stateDirOf, type GlobalOptions } from '../context.js';
import { escapeText } from '../escape.js';
import { outputFor, type Ctx } from '../shared.js';

export interface RunSummary {
  runId: string;
  /** When the run started. */
  time: string;
  recipe: string;
  mode: RunState['mode'];
  hosts: string[];
  /** How it ended; or running, crashed, abandoned (its controller is gone) or open (another controller's). */
  status: RunPhase;
  exitCode: number | null;
  changed: number;
  /** Completed steps not rolled back: the run's changes still on its hosts. */
  left: number;
  controller: string;
  pid: number;
}

/** What is known of an open run's controller from here (a finished run's does not matter). */
export function controllerOf(run: RunState, probe: ControllerProbe = localProbe): ControllerState {
  return openRunController(run, probe);
}

export function summarize(run: RunState, controller: ControllerState): RunSummary {
  return {
    runId: run.runId,
    time: run.startedAt,
    recipe: run.recipe,
    mode: run.mode,
    hosts: run.hostNames,
    status: runPhase(run, controller),
    exitCode: run.exitCode,
    changed: run.hosts.reduce((n, h) => n + h.steps.filter((s) => s.status === 'changed').length, 0),
    left: run.left.length,
    controller: run.controller,
    pid: run.pid,
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
      const out = outputFor(g);
      const ids = (await listRunIds(dir)).reverse();
      const rows: RunSummary[] = [];
      for (const id of ids) {
        if (rows.length >= limit) break;
        const j = await readJournal(dir, id).catch(() => undefined); // removed since it was listed
        if (!j) continue;
        const run = replay(j.entries);
        if (!run || (o.host && !run.hostNames.includes(o.host))) continue;
        rows.push(summarize(run, run.status === 'open' ? controllerOf(run) : { kind: 'elsewhere' }));
        // A torn last line is what a crash leaves, and `show` notes it; anything else is damage.
        for (const p of j.problems) if (p.kind === 'invalid') out.warn(`warning: ${escapeText(formatProblem(p))}`);
      }
      if (g.json)
        rows.forEach((r) => process.stdout.write(JSON.stringify({ event: 'run', ...r }) + '\n')); // time: when the run started
      else if (!rows.length) out.say(`no runs recorded in ${escapeText(dir)}`);
      else {
        // Journal text, shown escaped (a tab or a newline in a cell would shift the columns), in
        // columns padded to their widest cell, as `docker ps` and `terraform state list` print.
        const table = [
          ['RUN', 'STARTED', 'RECIPE', 'HOSTS', 'STATUS', 'CHANGED', 'LEFT'],
          ...rows.map((r) =>
            [r.runId, r.time.replace(/\.\d+Z$/, 'Z'), r.mode === 'apply' ? r.recipe : `${r.mode}: ${r.recipe}`, r.hosts.join(','), r.status, String(r.changed), String(r.left)].map((c) =>
              escapeText(String(c), { tabs: false }),
            ),
          ),
        ];
        const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
        for (const row of table)
          out.say(
            row
              .map((c, i) => c.padEnd(widths[i]!))
              .join('  ')
              .trimEnd(),
          );
      }
      ctx.exit(0);
    });
}
