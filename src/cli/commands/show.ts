import type { Command } from 'commander';
import { readRun } from '../../engine/journal.js';
import { stateDirOf, type GlobalOptions } from '../context.js';
import { outputFor, type Ctx } from '../shared.js';
import { escapeText } from '../escape.js';
import { summarize } from './history.js';

/** Journal text was written from what hosts said: shown escaped (JSON needs no escaping). */
const one = (s: unknown): string => escapeText(String(s));
const multi = (s: unknown): string => escapeText(String(s), { multiline: true });

export function registerShow(program: Command, ctx: Ctx): void {
  program
    .command('show')
    .description('one run from the journal, step by step')
    .argument('<run-id>')
    .action(async (runId: string, _o: unknown, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions>();
      const entries = await readRun(stateDirOf(g), runId);
      const out = outputFor(g);
      if (g.json) {
        // As events (SPEC §5: event, runId, time on each): the journal entry's kind is the event.
        entries.forEach(({ kind, ...rest }) => process.stdout.write(JSON.stringify({ event: kind, ...rest, runId }) + '\n'));
        return ctx.exit(0);
      }
      const s = summarize(runId, entries);
      if (s) out.say(`run ${one(runId)}: recipe ${one(s.recipe)} on ${one(s.hosts.join(', '))}, started ${one(s.time)}, status ${one(s.status)}${s.exitCode !== null ? ` (exit ${s.exitCode})` : ''}`);
      for (const e of entries) {
        switch (e.kind) {
          case 'step-finished':
            out.say(`  ${one(e.host)}  ${one(e.step)} [${one(e.type)}]  ${one(e.status)}: ${one(e.summary)}${e.error ? ` — ${multi(e.error)}` : ''}  (${one(e.durationMs)} ms)`);
            break;
          case 'step-started': {
            const done = entries.some((x) => x.kind === 'step-finished' && x.host === e.host && x.step === e.step);
            if (!done) out.say(`  ${one(e.host)}  ${one(e.step)} [${one(e.type)}]  STARTED, NOT FINISHED: ${one(e.summary)}`);
            break;
          }
          case 'rollback-finished':
            out.say(`  ${one(e.host)}  ↺ ${one(e.step)}: ${one(e.status)}${e.error ? ` — ${multi(e.error)}` : ''}`);
            break;
          case 'host-finished':
            out.say(`  ${one(e.host)}: ${one(e.status)}${e.error ? ` — ${multi(e.error)}` : ''}`);
            break;
        }
      }
      ctx.exit(0);
    });
}
