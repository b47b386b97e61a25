/**
 * `hostsmith undo <run-id>` (SPEC §9): takes back a finished run from the journal and the host
 * backups alone. Reads every host first; drift or an irreversible step → exit 5 with nothing
 * changed, unless --force (which skips those steps, reports them, and exits 3).
 */
import { resolveRunId } from '../run-ids.js';
import type { Command } from 'commander';
import { InputError } from '../../errors.js';
import { prunedNote } from '../../engine/prune.js';
import { loadUndo, readHosts, runUndo, undoLines } from '../../engine/undo.js';
import { withStepTypes } from '../../steps/registry.js';
import type { ShellTransport } from '../../transport/base.js';
import { connectAsJournaled } from '../journal-connect.js';
import { stateDirOf, type GlobalOptions } from '../context.js';
import { escapeText } from '../escape.js';
import { askYesNo, interactive } from '../prompt.js';
import { journalSecrets } from '../journal-secrets.js';
import { outputFor, type Ctx } from '../shared.js';

const one = (s: unknown): string => escapeText(String(s));
const multi = (s: unknown): string => escapeText(String(s), { multiline: true });
const collect = (v: string, prev: string[] = []) => [...prev, v];

interface UndoCli extends GlobalOptions {
  hosts?: string;
  force?: boolean;
  yes?: boolean;
  var?: string[];
  varsFile?: string;
  knownHosts?: string;
  identity?: string;
}

async function undoCommand(given: string, o: UndoCli): Promise<number> {
  const out = outputFor(o);
  const stateDir = stateDirOf(o);
  const runId = await resolveRunId(stateDir, given);
  const hosts = o.hosts
    ? o.hosts
        .split(',')
        .map((h) => h.trim())
        .filter(Boolean)
    : undefined;
  const gone = await prunedNote(stateDir, runId);
  if (gone) throw new InputError(gone);
  const target = await loadUndo(stateDir, runId, hosts);
  if (target.nothing) {
    out.say(one(target.nothing));
    return 0;
  }
  const tty = interactive() && !o.json;
  if (!o.yes && !tty) {
    throw new InputError('undo asks for confirmation, but there is no terminal to ask on: pass --yes to undo without asking (nothing was contacted or changed)');
  }

  // Secret vars the undo data needs: given, or asked for; checked against the run's digests; kept in memory only.
  const secrets = await journalSecrets(o, { names: target.needsSecrets, secrets: target.secrets, runId, command: 'undo', tty });

  const open: ShellTransport[] = [];
  try {
    out.say(`Reading ${target.hosts.length} host(s) of run ${one(runId)} (${one(target.run.recipe)})…`);
    const checks = await readHosts(target, { connect: connectAsJournaled(o, open), secrets });
    const problems = checks.flatMap((c) => c.problems);
    const down = checks.filter((c) => c.error);
    for (const c of down) out.warn(`${one(c.name)}: cannot be read: ${multi(c.error)}`);
    for (const p of problems) out.warn(`${one(p.host)}: ${one(p.step)} [${one(p.type)}]: ${p.kind === 'drift' ? 'DRIFT: ' : ''}${multi(p.message)}`);
    if ((problems.length || down.length) && !o.force) {
      out.warn(
        `Refused: ${[problems.length ? `${problems.length} step(s) cannot be taken back as the run left them` : '', down.length ? `${down.length} host(s) could not be read` : ''].filter(Boolean).join(', ')}; nothing was changed on any host. ` +
          `\`hostsmith undo ${runId} --force\` takes back the rest and reports what it skipped.`,
      );
      return problems.length ? 5 : 4;
    }
    // Undo summaries of custom types come from the run's own modules.
    const lines = withStepTypes(target.types?.types, () => undoLines(checks));
    const toUndo = checks.reduce((a, c) => a + c.ready.length, 0);
    out.say(toUndo ? 'Will put back, newest change first:' : 'Nothing can be put back.');
    for (const l of lines) out.say(`  ${one(l)}`);
    if (problems.length) out.say(`Will skip (--force): ${problems.map((p) => `${one(p.host)}: ${one(p.step)}`).join(', ')}`);
    if (tty && !o.yes && !(await askYesNo(`Undo these ${toUndo} change(s)?`))) {
      out.say('Not undone; nothing was changed.');
      return 0;
    }
    const report = await runUndo(target, checks, {
      force: o.force,
      secretValues: Object.values(secrets),
      secrets,
      emit: (e) => {
        if (o.json) process.stdout.write(JSON.stringify(e) + '\n');
        else if (e.event === 'rollback-finished')
          out.say(`  ${e.status === 'rolled-back' ? '↺' : '✖'} ${one(e.host)}  ${one(e.step)}: ${one(e.status)}${e.error ? ` — ${multi(e.error)}` : ''}${e.note ? ` — ${one(e.note)}` : ''}`);
      },
    });
    for (const [name, h] of Object.entries(report.hosts)) {
      out.say(
        `${one(name)}: ${one(h.status)}: put back ${h.rolledBack} change(s)${h.skippedSteps.length ? `; NOT put back: ${h.skippedSteps.map((s) => `${one(s.step)} (${one(s.why)})`).join('; ')}` : ''}`,
      );
      if (h.error && h.status !== 'rollback-incomplete') out.warn(multi(h.error));
    }
    out.say(`undo run ${one(report.runId)} (of run ${one(runId)}): ${one(report.status)}, exit ${report.exitCode}; see \`hostsmith show ${one(report.runId)}\``);
    return report.exitCode;
  } finally {
    await Promise.all(open.map((t) => t.close().catch(() => {})));
  }
}

export function registerUndo(program: Command, ctx: Ctx): void {
  program
    .command('undo')
    .description('take back what a finished run changed, from the journal and host backups alone (the recipe is not needed)')
    .argument('<run-id>', 'a run id, a unique prefix of one, or last')
    .option('--hosts <list>', 'only these hosts of the run (comma list)')
    .option('--force', 'take back what can be, skipping steps that drifted or cannot be taken back (reported; exit 3)')
    .option('-y, --yes', 'undo without asking (required when there is no terminal)')
    .option('--var <name=value>', 'the value of a secret var the undo data needs (repeatable)', collect)
    .option('--vars-file <yaml>', 'secret var values from a YAML file')
    .option('--known-hosts <file>', 'known_hosts file (default: the one the run used)')
    .option('--identity <keyfile>', 'SSH private key to use (default: the ones the run used)')
    .action(async (runId: string, _o: unknown, cmd: Command) => {
      const o = cmd.optsWithGlobals<UndoCli>();
      ctx.exit(await undoCommand(runId, o));
    });
}
