/**
 * Acting on a step from its journal entries alone, with no recipe: what `undo` and `recover` share.
 * A step's params and undo data are as journaled (secrets masked as `***`, given back here after
 * the value was checked against the run's digest); its context runs with the step's journaled
 * sudo and backup folder; its state is fingerprinted as the run fingerprinted it.
 */
import { ConnectError, HostsmithError, errorMessage } from '../errors.js';
import { stepType } from '../steps/registry.js';
import { stateFingerprint, type StepContext, type StepType } from '../steps/step.js';
import type { ShellTransport } from '../transport/base.js';
import { quote } from '../transport/shell.js';
import type { Facts } from './facts.js';
import type { JournalEntry } from './journal.js';
import type { Recorder } from './recorder.js';
import type { HostState, StepState } from './replay.js';

/** How a masked secret appears in the journal. */
export const MASK = '***';

/** A secret var of a run: salted digests of its value(s), as `<salt>:<sha256:hex>`. */
export type SecretDigests = Record<string, string[]>;

export const holdsMask = (v: unknown): boolean => JSON.stringify(v ?? null).includes(MASK);

/** Puts a secret value back where the journal masked it. */
export function unmask(v: unknown, value: string): unknown {
  if (typeof v === 'string') return v.split(MASK).join(value);
  if (Array.isArray(v)) return v.map((x) => unmask(x, value));
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, unmask(x, value)]));
  return v;
}

/** Where a step's backups are: the host's backup folder, or root's for a sudo step when the login kept its own. */
function backupDirOf(h: HostState, sudo: boolean, runId: string): string {
  const dir = h.backupDir ?? `/var/lib/hostsmith/backups/${runId}`;
  return sudo && dir.includes('/.local/state/hostsmith/') ? `/var/lib/hostsmith/backups/${runId}` : dir;
}

/** A step context for a journaled step of run `runId` (whose backups it uses). */
export function contextOf(t: ShellTransport, facts: Facts, h: HostState, s: Pick<StepState, 'name'>, sudo: boolean, runId: string, command = 'undo'): StepContext {
  return {
    host: h.name,
    transport: t,
    facts,
    runId,
    step: s.name,
    backupDir: backupDirOf(h, sudo, runId),
    sudo,
    exec: (cmd, eo = {}) => t.exec(cmd, { sudo, ...eo }),
    readFile: (p) => t.readFile(p, { sudo }),
    writeFile: (p, d, wo = {}) => t.writeFile(p, d, { sudo, ...wo }),
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
  h: HostState,
  s: StepState,
  secrets: SecretDigests,
  given: Record<string, string>,
  command = 'undo',
): { ready: JournaledStep } | { problem: 'unknown-type' | 'secret'; message: string } {
  const type = stepType(s.type);
  if (!type) return { problem: 'unknown-type', message: `step type "${s.type}" is unknown to this hostsmith` };
  let params: unknown = s.params;
  let undo: unknown = s.undo;
  if (holdsMask(params) || holdsMask(undo)) {
    const sec = secretFor(secrets, given, command);
    if (sec.value === undefined) return { problem: 'secret', message: sec.why! };
    params = unmask(params, sec.value);
    undo = unmask(undo, sec.value);
  }
  return { ready: { step: s, type, params, undo, sudo: s.sudo ?? h.target?.sudo ?? false } };
}

/** The step's state on the host now, fingerprinted as the run fingerprinted its pre- and post-states. */
export async function stateNow(ctx: StepContext, r: Pick<JournaledStep, 'type' | 'params'>): Promise<string> {
  const state = await r.type.check(ctx, r.params);
  return stateFingerprint(r.type, r.params, state);
}

/** Content a run resolved locally is journaled by digest only: such a step cannot be applied again from the journal. */
function resolvedLocally(params: unknown): boolean {
  if (!params || typeof params !== 'object') return false;
  const p = params as Record<string, unknown>;
  return ['rendered', 'resolvedContent'].some((k) => typeof p[k] === 'string' && (p[k] as string).startsWith('sha256:'));
}

/**
 * SPEC §9 with item 7: a rolled-back config file is worth little while the service still runs the
 * new one. The handlers the run ran (journaled as handler steps) that a step just rolled back
 * notifies run again, once each, from their journaled params, journaled as `afterRollback`.
 * Returns whether every one that was due ran; a lost connection is thrown.
 */
export async function handlersAgain(o: {
  host: HostState;
  /** Steps rolled back now, whose handlers are due. */
  rolledBack: StepState[];
  transport: ShellTransport;
  facts: Facts;
  /** The run whose handlers these are (its backups). */
  runId: string;
  secrets: SecretDigests;
  given: Record<string, string>;
  rec: Recorder;
  /** Id the events are sent under (the undo or recover run). */
  eventRunId: string;
  command: string;
  /** Handlers already run again for these rollbacks (before a crash): not run a second time. */
  skip?: Set<string>;
}): Promise<{ ok: boolean; errors: string[] }> {
  const names = new Set(o.rolledBack.filter((s) => !s.handler).flatMap((s) => s.notifies ?? []));
  for (const n of o.skip ?? []) names.delete(n);
  // The newest completed run of each handler (a handler runs once per run, but an undo may copy it).
  const ran = new Map<string, StepState>();
  for (const s of o.host.steps) if (s.handler && !s.afterRollback && s.status === 'changed' && names.has(s.name)) ran.set(s.name, s);
  const errors: string[] = [];
  const now = () => new Date().toISOString();
  for (const s of ran.values()) {
    const started = Date.now();
    const fail = (why: string) =>
      errors.push(`handler "${s.name}" could not run again after the rollback: ${why} — the rolled-back files are in place, but the service may still run what the run had set up: run the handler by hand`);
    const j = journaledStep(o.host, s, o.secrets, o.given, o.command);
    if (!('ready' in j)) {
      fail(j.message);
      continue;
    }
    const r = j.ready;
    if (resolvedLocally(r.params)) {
      fail('its content was made from the recipe, which the journal keeps by digest only');
      continue;
    }
    const ctx = contextOf(o.transport, o.facts, o.host, s, r.sudo, o.runId, o.command);
    let journaled = false;
    try {
      // The rollback may have removed what the handler acts on (the service's package, its folder).
      const gone = await r.type.gone?.(ctx, r.params);
      if (gone) {
        o.rec.emit({ event: 'step-finished', runId: o.eventRunId, time: now(), host: o.host.name, step: s.name, type: s.type, status: 'skipped', summary: `after rollback: not needed: ${gone}`, irreversible: false, durationMs: Date.now() - started, handler: true });
        continue;
      }
      const state = await r.type.check(ctx, r.params);
      const plan = r.type.plan(r.params, state, { runId: o.runId, step: s.name, backupDir: ctx.backupDir });
      if (!plan.changed) continue;
      await o.rec.write({
        kind: 'step-started',
        time: now(),
        host: o.host.name,
        step: s.name,
        type: s.type,
        handler: true,
        afterRollback: true,
        params: s.params,
        undo: plan.undo,
        irreversible: plan.undo === null,
        summary: `after rollback: ${plan.summary}`,
        pre: stateFingerprint(r.type, r.params, state),
        sudo: r.sudo,
      } satisfies JournalEntry);
      journaled = true;
      await r.type.apply(ctx, r.params, plan, state);
      await o.rec.write({ kind: 'step-finished', time: now(), host: o.host.name, step: s.name, type: s.type, status: 'changed', summary: `after rollback: ${plan.summary}`, changed: true, durationMs: Date.now() - started });
      o.rec.emit({ event: 'step-finished', runId: o.eventRunId, time: now(), host: o.host.name, step: s.name, type: s.type, status: 'changed', summary: `after rollback: ${plan.summary}`, irreversible: false, durationMs: Date.now() - started, handler: true });
    } catch (e) {
      if (e instanceof ConnectError) throw e;
      const why = errorMessage(e);
      if (journaled) {
        await o.rec
          .write({ kind: 'step-finished', time: now(), host: o.host.name, step: s.name, type: s.type, status: 'failed', summary: 'after rollback', changed: false, durationMs: Date.now() - started, error: why })
          .catch(() => {});
      }
      o.rec.emit({ event: 'step-finished', runId: o.eventRunId, time: now(), host: o.host.name, step: s.name, type: s.type, status: 'failed', summary: 'after rollback', irreversible: false, durationMs: Date.now() - started, handler: true, error: why });
      fail(why);
    }
  }
  return { ok: errors.length === 0, errors };
}

/**
 * Commands of run `runId` still running on the host (their controller died, or lost the link,
 * while they ran: sshd does not stop a command when its client goes away). Each carries
 * HOSTSMITH_RUN=<runId> in its environment. They are stopped (TERM, then KILL after 5 s) before
 * anything is decided from the host's state, or one could finish its change after the check.
 * Returns what was stopped, as "pid command" lines.
 */
export async function stopLeftovers(t: ShellTransport, runId: string, sudo: boolean): Promise<string[]> {
  const script = [
    `tag=${quote(`HOSTSMITH_RUN=${runId}`)}`,
    'list() { for f in /proc/[0-9]*/environ; do grep -qxzF -- "$tag" "$f" 2>/dev/null && { p=${f#/proc/}; echo "${p%/environ}"; }; done; }',
    'pids=$(list)',
    // Scratch folders of the run's probe batches (probe.ts), once nothing of the run runs any more.
    `scratch() { for d in /tmp/hostsmith-probe.${runId}.* "\${TMPDIR:-/tmp}"/hostsmith-probe.${runId}.*; do [ -d "$d" ] && [ ! -L "$d" ] && rm -rf -- "$d"; done; return 0; }`,
    '[ -n "$pids" ] || { scratch; exit 0; }',
    'for p in $pids; do printf "%s %s\\n" "$p" "$(tr "\\000\\n" "  " < /proc/$p/cmdline 2>/dev/null | head -c 200)"; done',
    'kill -TERM $pids 2>/dev/null',
    'i=0; while [ $i -lt 50 ]; do [ -z "$(list)" ] && { scratch; exit 0; }; sleep 0.1; i=$((i+1)); done',
    'kill -KILL $(list) 2>/dev/null; sleep 0.2; scratch; exit 0',
  ].join('\n');
  const r = await t.exec(script, { sudo });
  if (r.code !== 0) throw new HostsmithError(`${t.name}: could not look for commands the run left running: ${r.stderr.trim() || `exit ${r.code}`}`);
  return r.stdout.split('\n').filter(Boolean);
}
