/**
 * `hostsmith prune --older-than <duration>` (SPEC §9): forgets runs older than that — their host
 * backups and journal files — after which they can no longer be undone. See src/engine/prune.ts.
 */
import type { Command } from 'commander';
import { InputError } from '../../errors.js';
import { pruneRuns, selectPrune, tombstoneFile } from '../../engine/prune.js';
import { DURATION_HINT, parseDuration } from '../../duration.js';
import type { ShellTransport } from '../../transport/base.js';
import { stateDirOf, type GlobalOptions } from '../context.js';
import { escapeText } from '../escape.js';
import { connectAsJournaled } from '../journal-connect.js';
import { askYesNo, interactive } from '../prompt.js';
import { outputFor, type Ctx } from '../shared.js';

const one = (s: unknown): string => escapeText(String(s));
const multi = (s: unknown): string => escapeText(String(s), { multiline: true });

interface PruneCli extends GlobalOptions {
  olderThan?: string;
  yes?: boolean;
  knownHosts?: string;
  identity?: string;
}

function sizeOf(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

async function pruneCommand(o: PruneCli): Promise<number> {
  const out = outputFor(o);
  const stateDir = stateDirOf(o);
  if (o.olderThan === undefined) throw new InputError(`prune needs --older-than <duration>, e.g. --older-than 30d (${DURATION_HINT}, or days as 30d)`);
  const ms = parseDuration(o.olderThan);
  if (ms === undefined) throw new InputError(`--older-than: "${o.olderThan}" is not a duration: ${DURATION_HINT}, or days as 30d`);
  const tty = interactive() && !o.json;
  const json = (e: Record<string, unknown>) => {
    if (o.json) process.stdout.write(JSON.stringify({ time: new Date().toISOString(), ...e }) + '\n');
  };

  const found = await selectPrune(stateDir, ms);
  for (const c of found.filter((x) => x.keep)) {
    out.say(`keeping run ${one(c.run.runId)} (${one(c.run.recipe)}, started ${one(c.run.startedAt)}): ${one(c.keep)}`);
    json({ event: 'prune-kept', runId: c.run.runId, reason: c.keep });
  }
  const todo = found.filter((x) => !x.keep);
  if (!todo.length) {
    out.say(`nothing to prune: no finished run in ${one(stateDir)} started more than ${one(o.olderThan)} ago`);
    return 0;
  }
  if (!o.yes && !tty) {
    throw new InputError(
      `prune asks for confirmation, but there is no terminal to ask on: pass --yes to prune without asking (${todo.length} run(s) would be pruned; nothing was contacted or removed)`,
    );
  }
  out.say(`Runs started more than ${one(o.olderThan)} ago, to forget (their host backups and journals; they can no longer be undone afterwards):`);
  for (const c of todo) out.say(`  ${one(c.run.runId)}  ${one(c.run.mode)} of ${one(c.run.recipe)} on ${one(c.run.hostNames.join(', '))}, started ${one(c.run.startedAt)} (${one(c.phase)})`);
  if (tty && !o.yes && !(await askYesNo(`Prune these ${todo.length} run(s)?`))) {
    out.say('Not pruned; nothing was removed.');
    return 0;
  }

  const open: ShellTransport[] = [];
  try {
    const results = await pruneRuns(
      stateDir,
      todo.map((c) => c.run),
      {
        olderThan: o.olderThan,
        connect: connectAsJournaled(o, open, 'prune'),
        onHost: (runId, h) => {
          if (h.error) out.warn(`${one(runId)}: ${one(h.host)}: backups NOT removed: ${multi(h.error)}`);
          else if (!h.removed.length) out.say(`  ${one(runId)}: ${one(h.host)}: no backups recorded (the run never started there)`);
          else for (const r of h.removed) out.say(`  ${one(runId)}: ${one(h.host)}: ${r.absent ? `${one(r.dir)} was already gone` : `removed ${one(r.dir)} (${sizeOf(r.bytes)})`}`);
        },
      },
    );
    let failed = 0;
    let bytes = 0;
    for (const r of results) {
      bytes += r.bytes;
      if (r.pruned) out.say(`pruned run ${one(r.runId)} (${one(r.recipe)}) on ${one(r.hosts.map((h) => h.host).join(', '))}: ${sizeOf(r.bytes)} freed on its hosts; journal removed`);
      else {
        failed++;
        out.warn(
          `run ${one(r.runId)} NOT pruned: ${r.hosts
            .filter((h) => h.error)
            .map((h) => one(h.host))
            .join(', ')} could not be cleaned; its journal is kept, so a later prune retries`,
        );
      }
      json({
        event: r.pruned ? 'run-pruned' : 'prune-failed',
        runId: r.runId,
        bytes: r.bytes,
        hosts: Object.fromEntries(r.hosts.map((h) => [h.host, h.error ? { error: h.error } : { removed: h.removed }])),
      });
    }
    const done = results.length - failed;
    out.say(
      `${done} run(s) pruned${failed ? `, ${failed} kept because a host could not be reached or cleaned` : ''}; ${sizeOf(bytes)} freed on hosts. Pruned runs are listed in ${one(tombstoneFile(stateDir))}.`,
    );
    return failed ? 4 : 0;
  } finally {
    await Promise.all(open.map((t) => t.close().catch(() => {})));
  }
}

export function registerPrune(program: Command, ctx: Ctx): void {
  program
    .command('prune')
    .description('forget runs older than a duration: their host backups and journal files (they can no longer be undone)')
    .option('--older-than <duration>', 'prune runs started longer ago than this, e.g. 30d')
    .option('-y, --yes', 'prune without asking (required when there is no terminal)')
    .option('--known-hosts <file>', 'known_hosts file (default: the one each run used)')
    .option('--identity <keyfile>', 'SSH private key to use (default: the ones each run used)')
    .action(async (_o: unknown, cmd: Command) => {
      ctx.exit(await pruneCommand(cmd.optsWithGlobals<PruneCli>()));
    });
}
