/**
 * argv → command; errors → exit codes. The only place that calls process.exit.
 */
import { Command, CommanderError } from 'commander';
import { HostsmithError, errorMessage } from '../errors.js';
import { escapeText } from './escape.js';
import type { Ctx } from './shared.js';
import { version } from '../version.js';

class Exit {
  constructor(readonly code: number) {}
}

type Register = (program: Command, ctx: Ctx) => void;

/**
 * Each command's module, loaded only when that command runs: `--version`, `plan` or `history`
 * do not load the prompt, spinner, bootstrap or SSH code they do not use (start-up time).
 */
const COMMANDS: Record<string, () => Promise<Register>> = {
  plan: () => import('./commands/run.js').then((m) => m.registerRun),
  apply: () => import('./commands/run.js').then((m) => m.registerRun),
  validate: () => import('./commands/validate.js').then((m) => m.registerValidate),
  history: () => import('./commands/history.js').then((m) => m.registerHistory),
  show: () => import('./commands/show.js').then((m) => m.registerShow),
  undo: () => import('./commands/undo.js').then((m) => m.registerUndo),
  recover: () => import('./commands/recover.js').then((m) => m.registerRecover),
  prune: () => import('./commands/prune.js').then((m) => m.registerPrune),
  bootstrap: () => import('./commands/bootstrap.js').then((m) => m.registerBootstrap),
  schedule: () => import('./commands/schedule.js').then((m) => m.registerSchedule),
  test: () => import('./commands/test.js').then((m) => m.registerTest),
};

/** Two examples for each command's help: the common case, and one that shows an option. */
const EXAMPLES: Record<string, string[]> = {
  plan: ['hostsmith plan recipes/web-server.yml -i inventory.yml --hosts web', 'hostsmith plan recipes/web-server.yml --hosts root@203.0.113.10 --out plan.json --detailed-exitcode'],
  apply: ['hostsmith apply recipes/web-server.yml -i inventory.yml --hosts web1', 'hostsmith apply --plan plan.json'],
  validate: ['hostsmith validate recipes/web-server.yml', 'hostsmith validate recipes/*.yml'],
  bootstrap: ['hostsmith bootstrap', 'hostsmith bootstrap recipes/admin-user.yml'],
  schedule: ['hostsmith schedule add recipes/os-updates.yml --cron "0 3 * * *" -i inventory.yml --hosts all', 'hostsmith schedule list'],
  history: ['hostsmith history', 'hostsmith history --host web1 --limit 5'],
  show: ['hostsmith show last', 'hostsmith show 20261206T2154 --json'],
  undo: ['hostsmith undo last', 'hostsmith undo 20261206T215408Z-b5ae7c --hosts web1 --yes'],
  recover: ['hostsmith recover', 'hostsmith recover last --yes'],
  prune: ['hostsmith prune --older-than 30d', 'hostsmith prune --older-than 12h --yes'],
  test: ['hostsmith test recipes/motd.yml', 'hostsmith test recipes/web-server.yml --only converge,idempotence,undo --keep'],
};

/** The command word of argv (after global options), if any. */
function commandWord(argv: string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--state-dir') i++;
    else if (!a.startsWith('-')) return a;
  }
  return undefined;
}

/**
 * The program with the command argv names; with every command when argv names none it knows
 * (help, a typo, no command: the help lists them all). Without a command word (`--version`,
 * `--help`) every command is registered too, except for --version alone, which needs none.
 */
export async function buildProgram(ctx: Ctx, argv: string[] = []): Promise<Command> {
  const program = new Command('hostsmith')
    .description('set up servers over SSH from recipe files, and roll back what it did when a step fails')
    .version(version(), '-V, --version')
    .option('--json', 'one JSON event per line on stdout, nothing else there')
    .option('--state-dir <dir>', 'where the journal lives (default $XDG_STATE_HOME/hostsmith or ~/.local/state/hostsmith)')
    .option('--no-color', 'no colors')
    .option('--verbose', 'more detail (diffs on apply, journal path)')
    // One short line and where to look, not the whole help (commander adds "did you mean").
    .showHelpAfterError("(see `hostsmith --help`, or `hostsmith <command> --help` for a command's options)")
    // Each command's help lists the options every command takes too (--json, --state-dir…).
    .configureHelp({ showGlobalOptions: true })
    .exitOverride();
  const word = commandWord(argv);
  const versionOnly = !word && (argv.includes('--version') || argv.includes('-V')) && !argv.includes('--help') && !argv.includes('-h');
  const wanted = word && COMMANDS[word] ? [COMMANDS[word]!] : versionOnly ? [] : [...new Set(Object.values(COMMANDS))];
  const seen = new Set<Register>();
  for (const load of wanted) {
    const register = await load();
    if (seen.has(register)) continue;
    seen.add(register);
    register(program, ctx);
  }
  for (const c of program.commands) {
    c.exitOverride();
    const examples = EXAMPLES[c.name()];
    if (examples) c.addHelpText('after', `\nExamples:\n${examples.map((e) => `  $ ${e}`).join('\n')}\n`);
  }
  return program;
}

export async function main(argv: string[]): Promise<void> {
  // A closed pipe (`| head`) or a failing terminal must never stop a run half way: what cannot be
  // shown is dropped, and the run goes on to roll back, close its journal and release its locks.
  for (const stream of [process.stdout, process.stderr]) stream.on('error', () => {});
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
    await (await buildProgram(ctx, argv)).parseAsync(argv, { from: 'user' });
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
