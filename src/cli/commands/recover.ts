/**
 * `hostsmith recover [run-id]` (SPEC §9): without a run id, lists the runs left open whose
 * controller is gone; with one, finishes it — rolls back what it left on each host (the step in
 * flight decided by its state), releases its host locks, closes it as `recovered`.
 */
import { resolveRunId } from '../run-ids.js';
import type { Command } from 'commander';
import { InputError } from '../../errors.js';
import { loadRecover, openRuns, runRecover } from '../../engine/recover.js';
import { undoSummary } from '../../engine/replay.js';
import { withStepTypes } from '../../steps/registry.js';
import type { ShellTransport } from '../../transport/base.js';
import { stateDirOf, type GlobalOptions } from '../context.js';
import { escapeText } from '../escape.js';
import { journalSecrets } from '../journal-secrets.js';
import { connectAsJournaled } from '../journal-connect.js';
import { askYesNo, interactive } from '../prompt.js';
import { outputFor, type Ctx } from '../shared.js';

const one = (s: unknown): string => escapeText(String(s));
const multi = (s: unknown): string => escapeText(String(s), { multiline: true });
const collect = (v: string, prev: string[] = []) => [...prev, v];

interface RecoverCli extends GlobalOptions {
  yes?: boolean;
  force?: boolean;
  var?: string[];
  varsFile?: string;
  knownHosts?: string;
  identity?: string;
}

async function listOpen(o: RecoverCli): Promise<number> {
  const out = outputFor(o);
  const runs = await openRuns(stateDirOf(o));
  if (o.json) {
    for (const r of runs) {
      process.stdout.write(
        JSON.stringify({
          event: 'open-run',
          runId: r.run.runId,
          time: r.run.startedAt,
          recipe: r.run.recipe,
          mode: r.run.mode,
          hosts: r.run.hostNames,
          status: r.phase,
          controller: r.run.controller,
          pid: r.run.pid,
          recoverable: r.controller.kind === 'gone',
        }) + '\n',
      );
    }
    return 0;
  }
  if (!runs.length) {
    out.say('No open runs: every run in the journal has finished.');
    return 0;
  }
  for (const r of runs) {
    const what = `${one(r.run.runId)}  ${one(r.run.startedAt)}  ${r.run.mode === 'apply' ? '' : `${r.run.mode}: `}${one(r.run.recipe)} on ${one(r.run.hostNames.join(','))}`;
    switch (r.controller.kind) {
      case 'gone':
        out.say(
          `${what}\n  ${r.phase.toUpperCase()}: its controller is gone (${one(r.controller.why)}); left on hosts: ${r.run.left.length} change(s). Finish it: hostsmith recover ${one(r.run.runId)}`,
        );
        break;
      case 'running':
        out.say(`${what}\n  RUNNING (pid ${r.run.recoverers.at(-1)?.pid ?? r.run.pid} on this machine): not for recover; wait for it to finish.`);
        break;
      case 'elsewhere':
        out.say(`${what}\n  OPEN: started on another controller (${one(r.run.controller)}); check there whether it still runs, then hostsmith recover ${one(r.run.runId)} --force`);
        break;
    }
  }
  return 0;
}

async function recoverCommand(given: string, o: RecoverCli): Promise<number> {
  const out = outputFor(o);
  const stateDir = stateDirOf(o);
  const runId = await resolveRunId(stateDir, given);
  const target = await loadRecover(stateDir, runId, { force: o.force });
  const tty = interactive() && !o.json;
  if (!o.yes && !tty) throw new InputError('recover asks for confirmation, but there is no terminal to ask on: pass --yes to recover without asking (nothing was contacted or changed)');
  const secrets = await journalSecrets(o, { names: target.needsSecrets, secrets: target.secrets, runId, command: 'recover', tty });

  // Undo summaries of custom types come from the run's own modules.
  const undoOf = (s: { type: string; undo: unknown }) => withStepTypes(target.types?.types, () => undoSummary(s.type, s.undo));
  out.say(`Run ${one(runId)} (${one(target.run.mode)} of recipe ${one(target.run.recipe)}, started ${one(target.run.startedAt)}) was left open; its controller is gone.`);
  for (const s of target.settled) out.say(`  ${one(s.name)}: had finished (${one(s.status)}): left as it is`);
  for (const h of target.hosts) {
    out.say(`  ${one(h.host.name)}:`);
    const wd = h.host.watchdog;
    if (wd?.state === 'armed') {
      out.say(
        `    a lockout watchdog was armed there (it rolls the run back by itself at ${one(wd.deadline ?? '?')}): recover stops it first, or, if it has fired, records what it put back and does not do that again`,
      );
    }
    for (const s of h.inFlight) out.say(`    ${one(s.name)} [${one(s.type)}]: in flight at the crash — taken back only if the host shows its change (${one(undoOf(s))})`);
    for (const s of h.rollBack) out.say(`    ${one(s.name)} [${one(s.type)}]: ${s.rollback?.status === 'in-flight' ? 'its rollback was stopped — ' : ''}roll back: ${one(undoOf(s))}`);
    if (!h.inFlight.length && !h.rollBack.length) out.say('    nothing to take back; its lock is released');
  }
  if (tty && !o.yes && !(await askYesNo(`Recover run ${runId}?`))) {
    out.say('Not recovered; nothing was changed.');
    return 0;
  }
  const open: ShellTransport[] = [];
  try {
    const report = await runRecover(target, { connect: connectAsJournaled(o, open, 'recover'), secrets, emit: (e) => out.event(e) });
    for (const [name, h] of Object.entries(report.hosts)) {
      // apt and dpkg are waited for and repaired, never stopped: said apart from what was stopped.
      const notes = h.stopped.filter((l) => /^(waited|repaired) /.test(l));
      const stopped = h.stopped.filter((l) => !notes.includes(l));
      const parts = [
        ...notes.map(one),
        stopped.length ? `stopped ${stopped.length} command(s) the run had left running (${stopped.map(one).join('; ')})` : '',
        `rolled back ${h.rolledBack} change(s)`,
        h.untouched.length ? `found unchanged: ${h.untouched.map(one).join(', ')}` : '',
      ].filter(Boolean);
      out.say(`${one(name)}: ${one(h.status)}: ${parts.join('; ')}${h.error ? ` — ${multi(h.error)}` : ''}`);
    }
    out.say(
      report.closed
        ? `Run ${one(runId)} recovered (exit ${report.exitCode}); see \`hostsmith show ${one(runId)}\`.`
        : `Run ${one(runId)} is still open: the hosts above that could not be finished keep its changes. Run \`hostsmith recover ${one(runId)}\` again once they can be.`,
    );
    return report.exitCode;
  } finally {
    await Promise.all(open.map((t) => t.close().catch(() => {})));
  }
}

export function registerRecover(program: Command, ctx: Ctx): void {
  program
    .command('recover')
    .description('finish runs left open by a crash: roll back what they did on their hosts and release their locks')
    .argument('[run-id]', 'the run to finish: its id, a unique prefix of it, or last (without: list the open runs)')
    .option('-y, --yes', 'recover without asking (required when there is no terminal)')
    .option('--force', 'recover a run started on another controller (check there first that it is gone)')
    .option('--var <name=value>', 'the value of a secret var the rollback needs (repeatable)', collect)
    .option('--vars-file <yaml>', 'secret var values from a YAML file')
    .option('--known-hosts <file>', 'known_hosts file (default: the one the run used)')
    .option('--identity <keyfile>', 'SSH private key to use (default: the ones the run used)')
    .action(async (runId: string | undefined, _o: unknown, cmd: Command) => {
      const o = cmd.optsWithGlobals<RecoverCli>();
      ctx.exit(runId ? await recoverCommand(runId, o) : await listOpen(o));
    });
}
