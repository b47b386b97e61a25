import { resolve } from 'node:path';
import type { Command } from 'commander';
import { InputError } from '../../errors.js';
import { newRunId } from '../../engine/fleet.js';
import { loadRecipe } from '../../recipe/load.js';
import { outputFor, type Ctx } from '../shared.js';
import type { GlobalOptions } from '../context.js';

/** Checks recipes without contacting any host: schema, templates, cron syntax. */
export function registerValidate(program: Command, ctx: Ctx): void {
  program
    .command('validate')
    .description('check recipes (schema, templates, cron syntax); no host is contacted')
    .argument('<recipe...>', 'recipe files')
    .action(async (files: string[], _o: unknown, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions>();
      const out = outputFor(g);
      const problems: string[] = [];
      // Every JSON event carries a run id; a validation is a run that contacts nothing.
      const runId = newRunId();
      for (const f of files) {
        try {
          const r = await loadRecipe(resolve(f));
          if (g.json) process.stdout.write(JSON.stringify({ event: 'validated', runId, time: new Date().toISOString(), file: f, recipe: r.name, ok: true, steps: r.steps.length }) + '\n');
          else out.say(`${f}: ok (recipe ${r.name}, ${r.steps.length} steps, ${r.handlers.length} handlers)`);
        } catch (e) {
          if (!(e instanceof InputError)) throw e;
          problems.push(e.message);
          if (g.json) process.stdout.write(JSON.stringify({ event: 'validated', runId, time: new Date().toISOString(), file: f, ok: false, errors: e.issues }) + '\n');
        }
      }
      if (problems.length) throw new InputError(problems.join('\n'));
      ctx.exit(0);
    });
}
