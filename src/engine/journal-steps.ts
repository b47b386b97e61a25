/**
 * Acting on a step from its journal entries alone, with no recipe: what `undo` and `recover` share.
 * A step's params and undo data are as journaled (secrets masked as `***`, given back here after
 * the value was checked against the run's digest); its context runs with the step's journaled
 * sudo and backup folder; its state is fingerprinted as the run fingerprinted it.
 */
import { PACKAGE_WAIT_S, PACKAGES_BUSY, leftoversReport, leftoversScript } from './leftovers.js';
import { ConnectError, HostsmithError, errorMessage } from '../errors.js';
import { stepType } from '../steps/registry.js';
import { stateFingerprint, undoMismatch, type StepContext, type StepType } from '../steps/step.js';
import type { ShellTransport } from '../transport/base.js';
import type { Facts } from './facts.js';
import type { JournalEntry } from './journal.js';
import { rollBackStep } from './apply-step.js';
import type { Recorder } from './recorder.js';
import type { HostState, StepState } from './replay.js';

/** How a masked secret appears in the journal. */
export const MASK = '***';

/** A secret var of a run: salted digests of its value(s), as `<salt>:<sha256:hex>`. */
export type SecretDigests = Record<string, string[]>;

const now = () => new Date().toISOString();

export const holdsMask = (v: unknown): boolean => JSON.stringify(v ?? null).includes(MASK);

/** Puts a secret value back where the journal masked it. */
export function unmask(masked: unknown, value: string): unknown {
  if (typeof masked === 'string') return masked.split(MASK).join(value);
  if (Array.isArray(masked)) return masked.map((item) => unmask(item, value));
  if (masked && typeof masked === 'object') return Object.fromEntries(Object.entries(masked).map(([key, item]) => [key, unmask(item, value)]));
  return masked;
}

/**
 * A host whose journaled steps are acted on: as the run journaled it, and the connection to it
 * now. `runId`: the run whose steps they are (its backups); `command`: the one acting (undo,
 * recover), named when something cannot be done from the journal alone.
 */
export interface JournaledHost {
  host: HostState;
  transport: ShellTransport;
  facts: Facts;
  runId: string;
  command: string;
}

/** Where a step's backups are: the host's backup folder, or root's for a sudo step when the login kept its own. */
function backupDirOf(host: HostState, sudo: boolean, runId: string): string {
  const dir = host.backupDir ?? `/var/lib/hostsmith/backups/${runId}`;
  return sudo && dir.includes('/.local/state/hostsmith/') ? `/var/lib/hostsmith/backups/${runId}` : dir;
}

/** A step context for a journaled step (whose run's backups it uses). */
export function contextOf(on: JournaledHost, step: Pick<StepState, 'name'>, sudo: boolean): StepContext {
  const { transport, command } = on;
  return {
    host: on.host.name,
    transport,
    facts: on.facts,
    runId: on.runId,
    step: step.name,
    backupDir: backupDirOf(on.host, sudo, on.runId),
    sudo,
    exec: (cmd, eo = {}) => transport.exec(cmd, { sudo, ...eo }),
    readFile: (path) => transport.readFile(path, { sudo }),
    writeFile: (path, data, wo = {}) => transport.writeFile(path, data, { sudo, ...wo }),
    readSource: async () => {
      throw new HostsmithError(`${command} works from the journal alone: it reads no recipe sources`);
    },
    render: () => {
      throw new HostsmithError(`${command} works from the journal alone: it renders nothing`);
    },
  };
}

/** Which secret var fills a step's *** (one secret var in the run), or why none can. */
export function secretFor(secrets: SecretDigests, given: Record<string, string>, command = 'undo'): { value?: string; why?: string } {
  const names = Object.keys(secrets);
  if (!names.length) return { why: 'its journaled params or undo data hold a masked secret (***), and the run recorded no digest of its secret vars to check a value against' };
  if (names.length > 1) {
    const values = new Set(names.map((n) => given[n]));
    if (values.size === 1 && given[names[0]!] !== undefined) return { value: given[names[0]!]! };
    return { why: `its journaled params or undo data hold a masked secret (***), and the run had several secret vars (${names.join(', ')}): which one was there cannot be told from the journal` };
  }
  const v = given[names[0]!];
  return v === undefined ? { why: `its ${command} needs the secret var ${names[0]} (give it with --var, --vars-file or at the prompt)` } : { value: v };
}

/** A journaled step made ready to act on: its type, and params and undo data with secrets given back. */
export interface JournaledStep {
  step: StepState;
  type: StepType;
  params: unknown;
  undo: unknown;
  sudo: boolean;
}

/** The step ready to act on, or why it cannot be (unknown type, a secret that cannot be given back). */
export function journaledStep(
  host: HostState,
  step: StepState,
  secrets: SecretDigests,
  given: Record<string, string>,
  command = 'undo',
): { ready: JournaledStep } | { problem: 'unknown-type' | 'secret' | 'corrupt'; message: string } {
  const type = stepType(step.type);
  if (!type) return { problem: 'unknown-type', message: `step type "${step.type}" is unknown to this hostsmith` };
  let params: unknown = step.params;
  let undo: unknown = step.undo;
  if (holdsMask(params) || holdsMask(undo)) {
    const secret = secretFor(secrets, given, command);
    if (secret.value === undefined) return { problem: 'secret', message: secret.why! };
    params = unmask(params, secret.value);
    undo = unmask(undo, secret.value);
  }
  // Acted on from the journal alone: undo data that names anything but the step's own path, user
  // or service is a corrupt (or tampered) journal, and is not acted on.
  const mismatch = undoMismatch(type, params, undo);
  if (mismatch) return { problem: 'corrupt', message: `corrupt journal: ${mismatch}; nothing is done for this step (see \`hostsmith show\`)` };
  return { ready: { step, type, params, undo, sudo: step.sudo ?? host.target?.sudo ?? false } };
}

/** The step's state on the host now, fingerprinted as the run fingerprinted its pre- and post-states. */
export async function stateNow(ctx: StepContext, ready: Pick<JournaledStep, 'type' | 'params'>): Promise<string> {
  const state = await ready.type.check(ctx, ready.params);
  return stateFingerprint(ready.type, ready.params, state);
}

/**
 * Rolls back a journaled step with what the journal holds for it (undo, recover), journaled
 * through `rec`; its event goes out under `eventRunId` (the run acting).
 */
export async function rollBackJournaled(on: JournaledHost, ready: JournaledStep, rec: Recorder, eventRunId: string): Promise<boolean> {
  const { step } = ready;
  const ctx = contextOf(on, step, ready.sudo);
  return rollBackStep(
    rec,
    { host: on.host.name, runId: eventRunId },
    { spec: { name: step.name, type: step.type }, type: ready.type, params: ready.params, undo: ready.undo, summary: step.summary, ctx },
  );
}

/** Content a run resolved locally is journaled by digest only: such a step cannot be applied again from the journal. */
function resolvedLocally(params: unknown): boolean {
  if (!params || typeof params !== 'object') return false;
  const fields = params as Record<string, unknown>;
  return ['rendered', 'resolvedContent'].some((key) => typeof fields[key] === 'string' && (fields[key] as string).startsWith('sha256:'));
}

/** What running handlers again after a rollback needs beside the host. */
export interface HandlersDue {
  /** Steps rolled back now, whose handlers are due. */
  rolledBack: StepState[];
  /** Handlers already run again for these rollbacks (before a crash): not run a second time. */
  skip?: Set<string>;
  secrets: SecretDigests;
  given: Record<string, string>;
  rec: Recorder;
  /** Id the events are sent under (the undo or recover run). */
  eventRunId: string;
}

/**
 * SPEC §9 with item 7: a rolled-back config file is worth little while the service still runs the
 * new one. The handlers the run ran (journaled as handler steps) that a step just rolled back
 * notifies run again, once each, from their journaled params, journaled as `afterRollback`.
 * Returns whether every one that was due ran; a lost connection is thrown.
 */
export async function handlersAgain(on: JournaledHost, due: HandlersDue): Promise<{ ok: boolean; errors: string[] }> {
  const names = new Set(due.rolledBack.filter((step) => !step.handler).flatMap((step) => step.notifies ?? []));
  for (const name of due.skip ?? []) names.delete(name);
  // The newest completed run of each handler (a handler runs once per run, but an undo may copy it).
  const ran = new Map<string, StepState>();
  for (const step of on.host.steps) if (step.handler && !step.afterRollback && step.status === 'changed' && names.has(step.name)) ran.set(step.name, step);
  const errors: string[] = [];
  for (const handler of ran.values()) {
    const why = await handlerAgain(on, handler, due);
    if (why !== undefined) {
      errors.push(
        `handler "${handler.name}" could not run again after the rollback: ${why} — the rolled-back files are in place, but the service may still run what the run had set up: run the handler by hand`,
      );
    }
  }
  return { ok: errors.length === 0, errors };
}

/** Runs one handler again from its journaled params; undefined when it ran (or was not needed), else why not. */
async function handlerAgain(on: JournaledHost, handler: StepState, due: HandlersDue): Promise<string | undefined> {
  const started = Date.now();
  const { rec } = due;
  const journaled = journaledStep(on.host, handler, due.secrets, due.given, on.command);
  if (!('ready' in journaled)) return journaled.message;
  const ready = journaled.ready;
  if (resolvedLocally(ready.params)) return 'its content was made from the recipe, which the journal keeps by digest only';
  const ctx = contextOf(on, handler, ready.sudo);
  const at = { time: now(), host: on.host.name, step: handler.name, type: handler.type };
  const event = (status: 'skipped' | 'changed' | 'failed', summary: string, error?: string) =>
    rec.emit({ event: 'step-finished', runId: due.eventRunId, ...at, time: now(), status, summary, irreversible: false, durationMs: Date.now() - started, handler: true, ...(error ? { error } : {}) });
  let wrote = false;
  try {
    // The rollback may have removed what the handler acts on (the service's package, its folder).
    const gone = await ready.type.gone?.(ctx, ready.params);
    if (gone) {
      event('skipped', `after rollback: not needed: ${gone}`);
      return undefined;
    }
    const state = await ready.type.check(ctx, ready.params);
    const plan = ready.type.plan(ready.params, state, { runId: on.runId, step: handler.name, backupDir: ctx.backupDir });
    if (!plan.changed) return undefined;
    const summary = `after rollback: ${plan.summary}`;
    await rec.write({
      kind: 'step-started',
      ...at,
      time: now(),
      handler: true,
      afterRollback: true,
      params: handler.params,
      undo: plan.undo,
      irreversible: plan.undo === null,
      summary,
      pre: stateFingerprint(ready.type, ready.params, state),
      sudo: ready.sudo,
    } satisfies JournalEntry);
    wrote = true;
    await ready.type.apply(ctx, ready.params, plan, state);
    await rec.write({ kind: 'step-finished', ...at, time: now(), status: 'changed', summary, changed: true, durationMs: Date.now() - started });
    event('changed', summary);
    return undefined;
  } catch (e) {
    if (e instanceof ConnectError) throw e;
    const why = errorMessage(e);
    if (wrote) {
      await rec.write({ kind: 'step-finished', ...at, time: now(), status: 'failed', summary: 'after rollback', changed: false, durationMs: Date.now() - started, error: why }).catch(() => {});
    }
    event('failed', 'after rollback', why);
    return why;
  }
}

/**
 * Commands of run `runId` still running on the host (their controller died, or lost the link,
 * while they ran: sshd does not stop a command when its client goes away). Each carries
 * HOSTSMITH_RUN=<runId> in its environment. They are stopped (TERM, then KILL after 5 s) before
 * anything is decided from the host's state, or one could finish its change after the check.
 * Returns what was stopped, as "pid command" lines.
 */
export async function stopLeftovers(t: ShellTransport, runId: string, sudo: boolean): Promise<string[]> {
  const r = await t.exec(leftoversScript(runId), { sudo });
  if (r.code === PACKAGES_BUSY) {
    throw new HostsmithError(
      `${t.name}: apt or dpkg of run ${runId} is still running after ${PACKAGE_WAIT_S / 60} minutes (${r.stdout.trim()}); it was not stopped, as that would break the package database: wait for it to end, then run this again`,
    );
  }
  if (r.code !== 0) throw new HostsmithError(`${t.name}: could not look for commands the run left running: ${r.stderr.trim() || `exit ${r.code}`}`);
  return leftoversReport(r.stdout);
}
