import type { Command } from 'commander';
import { readRun } from '../../engine/journal.js';
import { stateDirOf, type GlobalOptions } from '../context.js';
import { outputFor, type Ctx } from '../shared.js';
import { summarize } from './history.js';

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
      if (s) out.say(`run ${runId}: recipe ${s.recipe} on ${s.hosts.join(', ')}, started ${s.time}, status ${s.status}${s.exitCode !== null ? ` (exit ${s.exitCode})` : ''}`);
      for (const e of entries) {
        switch (e.kind) {
          case 'step-finished':
            out.say(`  ${e.host}  ${e.step} [${e.type}]  ${e.status}: ${e.summary}${e.error ? ` — ${e.error}` : ''}  (${e.durationMs} ms)`);
            break;
          case 'step-started': {
            const done = entries.some((x) => x.kind === 'step-finished' && x.host === e.host && x.step === e.step);
            if (!done) out.say(`  ${e.host}  ${e.step} [${e.type}]  STARTED, NOT FINISHED: ${e.summary}`);
            break;
          }
          case 'rollback-finished':
            out.say(`  ${e.host}  ↺ ${e.step}: ${e.status}${e.error ? ` — ${e.error}` : ''}`);
            break;
          case 'host-finished':
            out.say(`  ${e.host}: ${e.status}${e.error ? ` — ${e.error}` : ''}`);
            break;
        }
      }
      ctx.exit(0);
    });
}
