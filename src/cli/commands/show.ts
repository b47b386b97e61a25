import type { Command } from 'commander';
import { resolveRunId } from '../run-ids.js';
import { InputError } from '../../errors.js';
import { prunedNote } from '../../engine/prune.js';
import { formatProblem, readJournal, type Reach } from '../../engine/journal.js';
import { replay, undoSummary, type ControllerState, type HostState, type RunPhase, type RunState, type StepState } from '../../engine/replay.js';
import { stateDirOf, type GlobalOptions } from '../context.js';
import { outputFor, type Ctx } from '../shared.js';
import { escapeText } from '../escape.js';
import { controllerOf, summarize } from './history.js';

/** Journal text was written from what hosts said: shown escaped (JSON needs no escaping). */
const one = (s: unknown): string => escapeText(String(s));
const multi = (s: unknown): string => escapeText(String(s), { multiline: true });

/** A step as the list of what is left names it: what it did, and what taking it back means. */
function leftLine(s: StepState): string {
  return `${s.name} [${s.type}]: ${s.summary} — to take back${s.sudo ? ' (with sudo)' : ''}: ${undoSummary(s.type, s.undo)}${s.rollback?.status === 'rollback-failed' ? ` (its rollback failed: ${s.rollback.error ?? 'no reason recorded'})` : ''}`;
}

/** The hosts where the run's lock is still held: started, never finished. */
function locksHeld(run: RunState): Array<{ host: string; lock: string }> {
  return run.hosts.filter((h) => h.status === 'open' && h.lock).map((h) => ({ host: h.name, lock: h.lock! }));
}

/**
 * The one thing to do next about a run, in words a person can act on at 3 a.m. This is the
 * single place that decides it: when hostsmith can finish a crashed run itself (recover), this
 * is where its command is named.
 */
export function nextMove(run: RunState, phase: RunPhase): string {
  const id = run.runId;
  const hostsLeft = run.hosts.filter((h) => h.left.length || h.inFlight.length || h.rollingBack.length).map((h) => h.name);
  switch (phase) {
    case 'running':
      return `The run is still going (pid ${run.pid} on this controller): wait for it to finish, then \`hostsmith show ${id}\` again.`;
    case 'open':
      return `The run has no end in the journal and ran from another controller, ${run.controller} (pid ${run.pid}): check there whether it still runs (\`hostsmith show ${id}\` on ${run.controller}).`;
    case 'crashed':
    case 'abandoned': {
      const what = hostsLeft.length ? `rolls back what it left on ${hostsLeft.join(', ')} (the step in flight only if the host shows its change)` : 'closes it';
      const locks = locksHeld(run).length ? ' and releases its host lock' : '';
      return `Nothing will finish this run by itself: its controller is gone. \`hostsmith recover ${id}\` ${what}${locks}.`;
    }
    default:
      if (hostsLeft.length && phase !== 'ok') {
        if (run.mode !== 'undo')
          return `Not everything was rolled back: on ${hostsLeft.join(', ')}, \`hostsmith undo ${id}\` takes back the steps listed under "left on the host", newest first (it checks each host first and changes nothing if one drifted).`;
        return `Not everything was rolled back: on ${hostsLeft.join(', ')}, undo by hand the steps listed under "left on the host", newest first, as their undo data says.`;
      }
      if (phase === 'ok' && run.mode === 'undo') return 'Nothing to do: the undo finished; what it took back is listed above.';
      if (phase === 'ok') return `Nothing to do: the run finished and its changes are in place. To take them back: \`hostsmith undo ${id}\`.`;
      return `Nothing to do here: no change of this run is left on its hosts${run.hosts.some((h) => h.error) ? '; fix what the errors above say, then apply again' : ''}.`;
  }
}

function phaseLine(run: RunState, phase: RunPhase, c: ControllerState): string {
  switch (phase) {
    case 'running':
      return `RUNNING: pid ${run.pid} is still at work on this controller`;
    case 'crashed':
      return `CRASHED: the run never finished and its controller is gone (${c.kind === 'gone' ? c.why : 'not running'})`;
    case 'abandoned':
      return `ABANDONED: every host finished, but the controller stopped before closing the run (${c.kind === 'gone' ? c.why : 'not running'}); a second Ctrl-C leaves a run so`;
    case 'open':
      return `OPEN: no end in the journal; it ran from another controller (${run.controller}), which cannot be checked from here`;
    default:
      return `finished ${run.finishedAt}: ${phase}${run.exitCode !== null ? ` (exit ${run.exitCode})` : ''}`;
  }
}

/** Why a host that did not fail itself was rolled back or not started: the failure elsewhere that caused it. */
function causeLine(h: HostState): string {
  const c = h.cause!;
  const what = h.status === 'not-started' ? 'not started' : 'rolled back';
  if (!c.host) return `${what} because: ${multi(c.error)}`;
  const err = c.error.startsWith(`${c.host}: `) ? c.error.slice(c.host.length + 2) : c.error;
  return `${what} because ${one(c.host)} failed${c.step ? ` at step "${one(c.step)}"` : ''}: ${multi(err)}`;
}

function reachLine(r: Reach): string {
  if (r.kind === 'local') return 'this machine (local)';
  const via = r.jump ? ` via ${r.jump.user}@${r.jump.host}:${r.jump.port}` : '';
  const keys = r.identities.length ? `, key ${r.identities.join(', ')}` : '';
  return `${r.user}@${r.host}:${r.port}${via}${keys}${r.knownHostsFile ? `, known_hosts ${r.knownHostsFile}` : ''}`;
}

function hostState(h: HostState, phase: RunPhase): string {
  switch (h.status) {
    case 'open':
      return phase === 'running' ? 'in progress' : 'STOPPED PART-WAY: the controller went away while working on this host';
    case 'pending':
      return phase === 'running' ? 'not started yet' : 'never started: nothing changed here';
    case 'rollback-incomplete':
      return 'ROLLBACK INCOMPLETE: some changes are still on the host';
    default:
      return h.status;
  }
}

export function registerShow(program: Command, ctx: Ctx): void {
  program
    .command('show')
    .description('one run from the journal: each host, step by step, what is left and what to do next')
    .argument('<run-id>', 'a run id, a unique prefix of one, or last')
    .action(async (given: string, _o: unknown, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions>();
      const runId = await resolveRunId(stateDirOf(g), given);
      const gone = await prunedNote(stateDirOf(g), runId);
      if (gone) throw new InputError(gone);
      const j = await readJournal(stateDirOf(g), runId);
      const out = outputFor(g);
      for (const p of j.problems) out.warn(`${p.kind === 'torn' ? 'note' : 'warning'}: ${one(formatProblem(p))}`);
      const run = replay(j.entries);
      if (!run) {
        out.warn(`${one(j.file)} holds no run-started entry: the run stopped before it recorded anything, so it changed nothing.`);
        return ctx.exit(0);
      }
      const controller = run.status === 'open' ? controllerOf(run) : ({ kind: 'elsewhere' } as const);
      const phase = summarize(run, controller).status;
      const next = nextMove(run, phase);
      if (g.json) {
        // As events (SPEC §5: event, runId, time on each): the journal entry's kind is the event.
        j.entries.forEach(({ kind, v: _v, ...rest }) => process.stdout.write(JSON.stringify({ event: kind, ...rest, runId }) + '\n'));
        const steps = (xs: StepState[]) =>
          xs.map((s) => ({ step: s.name, type: s.type, summary: s.summary, undo: undoSummary(s.type, s.undo), ...(s.rollback ? { rollback: s.rollback.status } : {}) }));
        process.stdout.write(
          JSON.stringify({
            event: 'run-state',
            runId,
            time: run.finishedAt ?? j.entries.at(-1)?.time ?? run.startedAt,
            status: phase,
            exitCode: run.exitCode,
            controller: run.controller,
            pid: run.pid,
            hosts: Object.fromEntries(
              run.hosts.map((h) => [
                h.name,
                {
                  status: h.status,
                  ...(h.lock ? { lock: h.lock } : {}),
                  ...(h.cause ? { cause: h.cause } : {}),
                  left: steps([...h.left].reverse()),
                  inFlight: steps(h.inFlight),
                  rollingBack: steps(h.rollingBack),
                },
              ]),
            ),
            next,
          }) + '\n',
        );
        return ctx.exit(0);
      }
      out.say(`run ${one(runId)}: ${one(run.mode)} of recipe ${one(run.recipe)} (${one(run.recipeFile)}) on ${one(run.hostNames.join(', '))}`);
      out.say(`started ${one(run.startedAt)} by pid ${run.pid} on ${one(run.controller)}; ${one(phaseLine(run, phase, controller))}`);
      if (run.fleet) {
        const f = run.fleet;
        const batches =
          f.batches.length > 1 ? `in ${f.batches.length} batches (${f.batches.map((b) => b.join(', ')).join(' | ')}), at most ${f.maxFail ?? 'any number of'} failed host(s) per batch; ` : '';
        out.say(`${one(batches)}rollback scope ${one(f.rollbackScope)}`);
      }
      for (const h of run.hosts) {
        const n = one(h.name);
        out.say('');
        // A host rolled back because of another is explained by its cause line; a host not started keeps its error (the budget it went over).
        const error = h.error && !(h.cause && h.status !== 'not-started') ? ` — ${multi(h.error)}` : '';
        out.say(`${n}: ${one(hostState(h, phase))}${error}`);
        if (h.cause) out.say(`  ${causeLine(h)}`);
        const where = [h.target ? `reached as ${reachLine(h.target)}` : '', h.backupDir ? `backups in ${h.backupDir}` : '', h.lock ? `lock ${h.lock}` : ''].filter(Boolean);
        if (where.length) out.say(`  ${one(where.join('; '))}`);
        for (const s of h.steps) {
          if (s.status === 'in-flight' && !s.completed) {
            out.say(`  ${n}  ${one(s.name)} [${one(s.type)}]  IN FLIGHT, NOT FINISHED: ${one(s.summary)} — its change may be partly made; to take it back: ${one(undoSummary(s.type, s.undo))}`);
          } else {
            out.say(
              `  ${n}  ${one(s.name)} [${one(s.type)}]  ${one(s.status === 'in-flight' ? 'changed (its end was not recorded)' : s.status)}: ${one(s.summary)}${s.error ? ` — ${multi(s.error)}` : ''}${s.durationMs !== undefined ? `  (${s.durationMs} ms)` : ''}`,
            );
          }
        }
        // Rollbacks in the order they ran: newest completion first.
        for (const s of [...h.steps].filter((x) => x.rollback).sort((a, b) => a.rollback!.startedAt.localeCompare(b.rollback!.startedAt) || (b.completedOrder ?? 0) - (a.completedOrder ?? 0))) {
          const r = s.rollback!;
          out.say(
            `  ${n}  ↺ ${one(s.name)}: ${r.status === 'in-flight' ? 'ROLLBACK STARTED, NOT FINISHED' : one(r.status)}${r.error ? ` — ${multi(r.error)}` : ''}${r.note ? ` — ${one(r.note)}` : ''}`,
          );
        }
        if (h.left.length) {
          out.say(phase === 'ok' ? '  changes of this run in place on the host, newest first:' : '  left on the host (completed, not rolled back), newest first:');
          for (const s of [...h.left].reverse()) out.say(`    ${one(leftLine(s))}`);
        } else if (h.steps.length) out.say('  nothing of this run is left on the host');
      }
      if (run.anomalies.length) {
        out.say('');
        for (const a of run.anomalies) out.warn(`warning: ${one(j.file)}: ${one(a)}`);
      }
      out.say('');
      out.say(`next: ${one(next)}`);
      ctx.exit(0);
    });
}
