/** `plan` and `apply`: the two commands that run a recipe against hosts. */
import { writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { InputError } from '../../errors.js';
import type { RunEvent } from '../../engine/events.js';
import { runRecipe, type RunReport } from '../../engine/fleet.js';
import { Masker } from '../../engine/mask.js';
import { prepare, type GlobalOptions, type TargetCliOptions } from '../context.js';
import { Output } from '../output.js';
import { askVars, askYesNo, interactive } from '../prompt.js';
import { addTargetOptions, addVarOptions, outputFor, type Ctx } from '../shared.js';

interface RunCli extends TargetCliOptions, GlobalOptions {
  yes?: boolean;
  out?: string;
}

/** First Ctrl-C: stop after the step in flight and roll back; second: stop rolling back. */
function interrupts(out: Output): { interrupt: AbortController; abortRollback: AbortController; dispose(): void } {
  const interrupt = new AbortController();
  const abortRollback = new AbortController();
  const onSignal = (sig: string) => {
    if (!interrupt.signal.aborted) {
      out.warn(`\n${sig}: stopping after the step in flight, then rolling back completed steps. Press Ctrl-C again to stop the rollback (what is left stays in the journal).`);
      interrupt.abort();
    } else if (!abortRollback.signal.aborted) {
      out.warn(`\n${sig} again: stopping the rollback. What was not rolled back is listed by \`hostsmith show <run-id>\`.`);
      abortRollback.abort();
    }
  };
  const onInt = () => onSignal('Interrupted');
  const onTerm = () => onSignal('Terminated');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  return {
    interrupt,
    abortRollback,
    dispose: () => {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
    },
  };
}

async function savePlan(file: string, report: RunReport, events: RunEvent[], recipeFile: string, masker: Masker): Promise<void> {
  const plan = {
    version: 1,
    runId: report.runId,
    recipe: recipeFile,
    createdAt: new Date().toISOString(),
    status: report.status,
    hosts: Object.fromEntries(
      Object.keys(report.hosts).map((h) => [
        h,
        {
          ...report.hosts[h],
          steps: events.filter((e) => e.event === 'step-finished' && e.host === h),
        },
      ]),
    ),
  };
  await writeFile(file, JSON.stringify(masker.value(plan), null, 2) + '\n');
}

async function runCommand(mode: 'plan' | 'apply', recipeFile: string, o: RunCli, ctx: Ctx): Promise<number> {
  const out = outputFor(o);
  const tty = interactive() && !o.json;
  if (mode === 'apply' && !o.yes && !tty) {
    throw new InputError('apply asks for confirmation, but there is no terminal to ask on: pass --yes to apply without asking (nothing was contacted or changed)');
  }
  const prep = await prepare(recipeFile, o, tty ? (_r, missing) => askVars(missing) : undefined);
  const sig = interrupts(out);
  const events: RunEvent[] = [];
  const emit = (e: RunEvent) => {
    events.push(e);
    out.event(e);
  };
  const common = {
    recipe: prep.recipe,
    targets: prep.targets,
    stateDir: prep.stateDir,
    concurrency: prep.concurrency,
    secrets: prep.secrets,
    emit,
    interrupt: sig.interrupt.signal,
    abortRollback: sig.abortRollback.signal,
    defaultTimeoutMs: prep.config.timeoutMs,
    defaultRetry: prep.config.retry,
    journalVars: prep.cliVars,
  };
  try {
    if (mode === 'plan' || (!o.yes && tty)) {
      const plan = await runRecipe({ ...common, mode: 'plan', keepOpen: mode === 'apply' });
      out.summary(plan, { confirming: mode === 'apply' });
      if (o.out) await savePlan(o.out, plan, events, prep.recipe.file, new Masker(prep.secrets));
      if (mode === 'plan') return plan.exitCode;
      if (plan.exitCode !== 0) {
        out.say('Not applied: the plan found the problems above. Nothing was changed.');
        return plan.exitCode;
      }
      const toChange = Object.values(plan.hosts).reduce((a, h) => a + h.changed, 0);
      if (!toChange) {
        out.say('Nothing to change; not applying.');
        return 0;
      }
      if (!(await askYesNo(`Apply these ${toChange} change(s)?`))) {
        out.say('Not applied; nothing was changed.');
        return 0;
      }
    }
    const report = await runRecipe({ ...common, mode: 'apply' });
    out.summary(report);
    ctx.log(`journal: ${report.journalFile}`);
    return report.exitCode;
  } finally {
    sig.dispose();
    await prep.close();
  }
}

export function registerRun(program: Command, ctx: Ctx): void {
  const plan = program
    .command('plan')
    .description('show what apply would change, with diffs; reads only, changes nothing on the hosts')
    .argument('<recipe>', 'recipe file (YAML)')
    .option('--out <file>', 'also write the plan as JSON to this file');
  addVarOptions(addTargetOptions(plan)).action(async (recipe: string, _o: RunCli, cmd: Command) => {
    ctx.exit(await runCommand('plan', recipe, cmd.optsWithGlobals(), ctx));
  });

  const apply = program
    .command('apply')
    .description('apply a recipe: journaled, and rolled back newest-first if a step fails')
    .argument('<recipe>', 'recipe file (YAML)')
    .option('-y, --yes', 'apply without asking (required when there is no terminal)');
  addVarOptions(addTargetOptions(apply)).action(async (recipe: string, _o: RunCli, cmd: Command) => {
    ctx.exit(await runCommand('apply', recipe, cmd.optsWithGlobals(), ctx));
  });
}
