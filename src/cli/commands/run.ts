/** `plan` and `apply`: the two commands that run a recipe against hosts. */
import { loadVarsFile, parseVarArgs } from '../../recipe/vars.js';
import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { InputError } from '../../errors.js';
import type { RunEvent } from '../../engine/events.js';
import { runRecipe } from '../../engine/fleet.js';
import { checkPlanOut, makePlanValue, planInputDifferences, readPlanFile, writePlanFile } from '../../engine/plan-file.js';
import { newSalt, type PlanValue } from '../../engine/plan-value.js';
import { Masker } from '../../engine/mask.js';
import { prepare, type GlobalOptions, type Prepared, type TargetCliOptions } from '../context.js';
import type { Output } from '../output.js';
import { askVars, askYesNo, interactive } from '../prompt.js';
import { addTargetOptions, addVarOptions, outputFor, type Ctx } from '../shared.js';

interface RunCli extends TargetCliOptions, GlobalOptions {
  yes?: boolean;
  out?: string;
  plan?: string;
  detailedExitcode?: boolean;
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

/**
 * Test-only fault injection: HOSTSMITH_FAULT_BEFORE_STEP='{"step":"<name>","run":"<local shell command>"}'
 * runs the command on this machine just before that step's turn (on every host), so a test can
 * change a host between the plan and the write.
 */
function faultHook(): ((host: string, step: string) => Promise<void>) | undefined {
  const raw = process.env.HOSTSMITH_FAULT_BEFORE_STEP;
  if (!raw) return undefined;
  const f = JSON.parse(raw) as { step: string; run: string };
  return async (host, step) => {
    if (step !== f.step) return;
    await new Promise<void>((res) => execFile('/bin/sh', ['-c', f.run], { env: { ...process.env, HOSTSMITH_HOST: host } }, () => res()));
  };
}

async function runCommand(mode: 'plan' | 'apply', recipeArg: string | undefined, o: RunCli, ctx: Ctx): Promise<number> {
  const out = outputFor(o);
  const tty = interactive() && !o.json;
  const saved = o.plan ? await readPlanFile(resolve(o.plan)) : undefined;
  if (mode === 'apply' && !o.yes && !tty && !saved) {
    throw new InputError('apply asks for confirmation, but there is no terminal to ask on: pass --yes to apply without asking (nothing was contacted or changed)');
  }
  const recipeFile = recipeArg ?? saved?.recipe.file;
  if (!recipeFile) throw new InputError('apply needs a recipe, or --plan <file> (which names its recipe)');
  const opts: RunCli = saved ? { ...(saved.options as Partial<RunCli>), ...definedOnly(o), planVars: { cli: saved.vars.cli, file: saved.vars.file } } : o;
  if (o.out) await checkPlanOut(resolve(o.out));
  // apply --plan never asks: the plan was reviewed; what it needs (its secrets) is given on the command line.
  // An --identity locked by a passphrase is asked for even with --plan: the plan file never holds it.
  const prep = await prepare(recipeFile, opts, tty && !saved ? (_r, missing) => askVars(missing) : undefined, { askPassphrase: tty });
  prep.warnings.forEach((w) => out.warn(w));
  if (saved) {
    const given = new Set([...Object.keys(parseVarArgs(o.var ?? [])), ...(o.varsFile ? Object.keys(await loadVarsFile(resolve(o.varsFile))) : [])]);
    const diffs = await planInputDifferences(saved, prep, resolve(o.plan!), given);
    if (saved.exitCode !== 0) diffs.unshift({ file: resolve(o.plan!), message: `the plan found problems when it was made (status ${saved.status}); nothing to apply: fix them and make a new plan` });
    if (diffs.length) {
      await prep.close();
      throw new InputError([{ message: `the saved plan cannot be applied as it is (nothing was contacted or changed):` }, ...diffs]);
    }
  }
  return runPrepared(
    prep,
    { mode, confirm: mode === 'apply' && !o.yes && tty && !saved, saved, out: o.out, planOptions: targetOptions(opts), detailedExitcode: o.detailedExitcode === true },
    out,
    ctx,
  );
}

/** How a prepared run goes: plan only, or apply (after plan → show → confirm on a terminal, or following a saved plan). */
export interface RunFlow {
  mode: 'plan' | 'apply';
  /** plan --detailed-exitcode: 2 when something would change. */
  detailedExitcode?: boolean;
  /** Plan, show the plan, ask, and apply exactly what was shown. */
  confirm: boolean;
  /** The answer Enter gives at that question (apply: no; bootstrap, a guided setup: yes). */
  confirmDefault?: boolean;
  /** apply --plan: the saved plan to follow. */
  saved?: PlanValue;
  /** plan --out: where to write the plan. */
  out?: string;
  /** The target options a plan file keeps. */
  planOptions: Record<string, unknown>;
  /** The run's id, when the caller names it first (a scheduled run's log file is named by it). */
  runId?: string;
}

/**
 * Runs a prepared recipe and returns the exit code; closes the prepared connections. On a
 * terminal (`confirm`) the plan is shown, the person asked, and the apply follows exactly that plan.
 */
export async function runPrepared(prep: Prepared, flow: RunFlow, out: Output, ctx: Ctx): Promise<number> {
  const { mode, saved } = flow;
  const sig = interrupts(out);
  const common = {
    recipe: prep.recipe,
    targets: prep.targets,
    stateDir: prep.stateDir,
    concurrency: prep.concurrency,
    secrets: prep.secrets,
    emit: (e: RunEvent) => out.event(e),
    interrupt: sig.interrupt.signal,
    abortRollback: sig.abortRollback.signal,
    defaultTimeoutMs: prep.config.timeoutMs,
    defaultRetry: prep.config.retry,
    journalVars: prep.cliVars,
    beforeStep: faultHook(),
    // Fault injection (`hostsmith test`'s rollback stage): the run fails right after this step.
    ...(process.env.HOSTSMITH_FAULT_FAIL_AFTER_STEP ? { failAfterStep: process.env.HOSTSMITH_FAULT_FAIL_AFTER_STEP } : {}),
    // Fleet options (SPEC §12): the apply goes by them; a plan reads every host and ignores them.
    ...(prep.fleet.batchSize ? { batchSize: prep.fleet.batchSize } : {}),
    ...(prep.fleet.maxFail ? { maxFail: prep.fleet.maxFail } : {}),
    rollbackScope: prep.fleet.rollbackScope,
    ...(prep.confirmMs ? { confirmMs: prep.confirmMs } : {}),
    ...(flow.runId ? { runId: flow.runId } : {}),
  };
  const planInputs = (salt: string) => ({
    recipe: prep.recipe,
    targets: prep.targets,
    salt,
    given: prep.given,
    secret: Object.values(prep.recipe.vars)
      .filter((v) => v.secret)
      .map((v) => v.name),
    options: flow.planOptions,
  });
  try {
    let expected = saved;
    if (mode === 'plan' && (prep.fleet.given.batch || prep.fleet.rollbackScope !== 'host')) {
      const kept = flow.out ? `; ${flow.out} keeps them, so \`hostsmith apply --plan ${flow.out}\` runs with them` : '';
      out.warn(`note: a plan reads every host at once and changes nothing, so --batch, --max-fail and --rollback-scope only shape the apply${kept}.`);
    }
    if (mode === 'plan' || flow.confirm) {
      const salt = newSalt();
      const plan = await runRecipe({ ...common, mode: 'plan', keepOpen: mode === 'apply', salt });
      out.summary(plan, { confirming: mode === 'apply' });
      const value = await makePlanValue(plan, planInputs(salt));
      if (flow.out) {
        await writePlanFile(resolve(flow.out), value, new Masker(prep.secrets));
        out.say(`Plan saved to ${flow.out}: apply exactly this with \`hostsmith apply --plan ${flow.out}\`.`);
      }
      // As Terraform's: 2 says "something would change", for drift checks from cron or CI.
      if (mode === 'plan') return plan.exitCode === 0 && flow.detailedExitcode && Object.values(plan.hosts).some((h) => h.changed > 0) ? 2 : plan.exitCode;
      if (plan.exitCode !== 0) {
        out.say('Not applied: the plan found the problems above. Nothing was changed.');
        return plan.exitCode;
      }
      const toChange = Object.values(plan.hosts).reduce((a, h) => a + h.changed, 0);
      if (!toChange) {
        out.say('Nothing to change; not applying.');
        return 0;
      }
      if (!(await askYesNo(`Apply these ${toChange} change(s)?`, flow.confirmDefault ?? false))) {
        out.say('Not applied; nothing was changed.');
        return 0;
      }
      // What was confirmed is what happens: the apply follows this plan, under the same rule as a saved one.
      expected = value;
    }
    const report = await runRecipe({ ...common, mode: 'apply', ...(expected ? { expected } : {}) });
    out.summary(report);
    ctx.log(`journal: ${report.journalFile}`);
    return report.exitCode;
  } finally {
    out.end();
    sig.dispose();
    await prep.close();
  }
}

/** The target options a plan keeps, so `apply --plan` alone reaches the same hosts the same way. */
function targetOptions(o: RunCli): Record<string, unknown> {
  const keep = ['hosts', 'limit', 'inventory', 'identity', 'knownHosts', 'acceptNewHostKeys', 'sudo', 'concurrency', 'batch', 'maxFail', 'rollbackScope', 'confirm'] as const;
  const out: Record<string, unknown> = {};
  for (const k of keep) if (o[k] !== undefined) out[k] = k === 'inventory' || k === 'identity' || k === 'knownHosts' ? resolve(String(o[k])) : o[k];
  return out;
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** SPEC §12. `plan` takes them too (checked, kept in --out's file), so one command line serves both. */
export function addFleetOptions(c: Command): Command {
  return c
    .option('--batch <n|n%>', 'run the hosts in batches of n (or n% of them, rounded up), each finished with its rollbacks before the next')
    .option('--max-fail <n|n%>', 'failed hosts a batch may have (or n% of it, rounded down) before no later batch starts (default 0 with --batch)')
    .option('--rollback-scope <scope>', 'which hosts roll back when one fails: host (default), batch or fleet')
    .option('--confirm <duration>', "lockout protection: a watchdog on each host rolls the run back by itself unless a new SSH login and the recipe's verify: commands work within this time");
}

export function registerRun(program: Command, ctx: Ctx): void {
  const plan = program
    .command('plan')
    .description('show what apply would change, with diffs; reads only, changes nothing on the hosts')
    .argument('<recipe>', 'recipe file (YAML)')
    .option('--out <file>', 'also write the plan as JSON to this file')
    .option('--detailed-exitcode', 'exit 2 when something would change, 0 when nothing would (other failures as usual: 1, 3, 4, 5)');
  addFleetOptions(addVarOptions(addTargetOptions(plan))).action(async (recipe: string, _o: RunCli, cmd: Command) => {
    ctx.exit(await runCommand('plan', recipe, cmd.optsWithGlobals(), ctx));
  });

  const apply = program
    .command('apply')
    .description('apply a recipe: journaled, and rolled back newest-first if a step fails')
    .argument('[recipe]', 'recipe file (YAML); may be left out with --plan')
    .option('-y, --yes', 'apply without asking (required when there is no terminal)')
    .option('--plan <file>', 'apply exactly this saved plan (from plan --out); refused when it is stale');
  addFleetOptions(addVarOptions(addTargetOptions(apply))).action(async (recipe: string | undefined, _o: RunCli, cmd: Command) => {
    ctx.exit(await runCommand('apply', recipe, cmd.optsWithGlobals(), ctx));
  });
}
