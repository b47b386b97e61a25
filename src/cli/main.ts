/**
 * argv → command; errors → exit codes. The only place that calls process.exit.
 */
import { Command, CommanderError } from 'commander';
import { HostsmithError, errorMessage } from '../errors.js';
import { registerBootstrap } from './commands/bootstrap.js';
import { registerHistory } from './commands/history.js';
import { registerPrune } from './commands/prune.js';
import { registerRecover } from './commands/recover.js';
import { registerRun } from './commands/run.js';
import { registerSchedule } from './commands/schedule.js';
import { registerShow } from './commands/show.js';
import { registerUndo } from './commands/undo.js';
import { registerValidate } from './commands/validate.js';
import { escapeText } from './escape.js';
import type { Ctx } from './shared.js';
import { version } from '../version.js';

class Exit {
  constructor(readonly code: number) {}
}

export function buildProgram(ctx: Ctx): Command {
  const program = new Command('hostsmith')
    .description('set up servers over SSH from recipe files, and roll back what it did when a step fails')
    .version(version(), '-V, --version')
    .option('--json', 'one JSON event per line on stdout, nothing else there')
    .option('--state-dir <dir>', 'where the journal lives (default $XDG_STATE_HOME/hostsmith or ~/.local/state/hostsmith)')
    .option('--no-color', 'no colors')
    .option('--verbose', 'more detail (diffs on apply, journal path)')
    .showHelpAfterError()
    .exitOverride();
  registerRun(program, ctx);
  registerValidate(program, ctx);
  registerHistory(program, ctx);
  registerShow(program, ctx);
  registerUndo(program, ctx);
  registerRecover(program, ctx);
  registerPrune(program, ctx);
  registerBootstrap(program, ctx);
  registerSchedule(program, ctx);
  program.commands.forEach((c) => c.exitOverride());
  return program;
}

export async function main(argv: string[]): Promise<void> {
  const verbose = argv.includes('--verbose');
  const ctx: Ctx = {
    exit: (code) => {
      throw new Exit(code);
    },
    log: (msg) => {
      if (verbose) process.stderr.write(msg + '\n');
    },
  };
  let code: number;
  try {
    await buildProgram(ctx).parseAsync(argv, { from: 'user' });
    code = 0;
  } catch (e) {
    if (e instanceof Exit) code = e.code;
    else if (e instanceof CommanderError) {
      // help and version are not errors; every other parse problem is invalid input.
      code = e.exitCode === 0 ? 0 : 2;
    } else if (e instanceof HostsmithError) {
      process.stderr.write(`hostsmith: ${escapeText(e.message, { multiline: true })}\n`);
      code = e.exitCode;
    } else {
      process.stderr.write(`hostsmith: unexpected error: ${escapeText(errorMessage(e), { multiline: true })}\n${e instanceof Error && verbose ? e.stack : ''}\n`);
      code = 1;
    }
  }
  // Let stdout drain before exiting, so piped JSON is never cut short.
  process.stdout.write('', () => process.exit(code));
}
