/**
 * `reboot`: restarts the host and waits for it to come back, then the run goes on over a new
 * connection. Came back means a new boot id (/proc/sys/kernel/random/boot_id differs from the one
 * read before): a host that still answers with the old one has not rebooted yet, however long it
 * was unreachable. As Ansible's reboot module: the reboot is asked for with the init system's own
 * command, detached, so the exec that asks returns before the link goes; then the host is polled
 * over fresh logins (the run's connection, made again in place) until the timeout.
 *
 * A reboot cannot be taken back, and needs no taking back: its rollback does nothing and says so
 * (the host was rebooted at …), so a rollback, undo or recover that crosses it goes on with the
 * other steps. It is never run again after a rollback (as a handler), nor by the watchdog.
 */
import { flag } from '../accounts.js';
import { z } from 'zod';
import { ConnectError, StepError } from '../../errors.js';
import { DURATION_HINT, parseDuration } from '../../duration.js';
import { quote } from '../../shell/script.js';
import type { Plan, PlanEnv, StepContext, StepType } from '../step.js';
import { str, type UndoData } from '../undo-text.js';

export const BOOT_ID = '/proc/sys/kernel/random/boot_id';
/** Debian's marker: a package (a new kernel, libc) asks for a reboot by creating it. */
export const REBOOT_REQUIRED = '/var/run/reboot-required';
const REBOOT_PKGS = '/var/run/reboot-required.pkgs';

/** How long a reboot is waited for unless the step says (Ansible waits 600 s; most servers are back in far less). */
export const DEFAULT_TIMEOUT_S = 300;

/** Seconds or a duration ("5m"), in milliseconds, more than 0. */
const duration = z.unknown().transform((v, ctx) => {
  const ms = parseDuration(v);
  if (ms === undefined || ms === 0) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: ms === 0 ? 'must be more than 0' : `invalid duration ${JSON.stringify(v)} (${DURATION_HINT})` });
    return z.NEVER;
  }
  return ms;
});

export const rebootSchema = z
  .object({
    /** How long the host may take to go down and come back with a new boot id. */
    timeout: duration.default(DEFAULT_TIMEOUT_S),
    /** Told to logged-in users (wall) and the host's log before the reboot. */
    message: z.string().min(1).max(500).optional(),
    /** Reboot only when the host asks for it (/var/run/reboot-required exists); else the step is skipped. */
    only_if_needed: flag.default(false),
  })
  .strict();

export type RebootParams = z.output<typeof rebootSchema>;

/** How the host is asked to reboot: the init system's own command. */
export type RebootHow = 'systemctl' | 'shutdown' | 'reboot';

export interface RebootState {
  /** The host as the run names it (plans say "reboot <host>"). */
  host: string;
  bootId: string;
  /** /var/run/reboot-required exists. */
  needed: boolean;
  /** What asked for it (/var/run/reboot-required.pkgs), one line. */
  pkgs: string;
  /** null: no init system that can reboot the host (PID 1 is `pid1`). */
  how: RebootHow | null;
  pid1: string;
  /** The step's commands run as root (login root, or sudo). */
  root: boolean;
  /** The run can make its connection again (SSH, in an apply); false for `local`. */
  reconnectable: boolean;
}

export interface RebootUndo {
  kind: 'reboot';
  /** The boot the host ran before the step: a host still running it was not rebooted. */
  bootBefore: string;
  /** Known once the host is back (the apply's own undo data). */
  bootAfter?: string;
  rebootedAt?: string;
}

/** The commands that reboot, as run on the host (root). */
export const REBOOT_COMMAND: Record<RebootHow, string> = { systemctl: 'systemctl reboot', shutdown: 'shutdown -r now', reboot: 'reboot' };

/** Init systems whose `shutdown`/`reboot` restart the host (not a container's tini or dumb-init). */
const INITS = new Set(['init', 'systemd', 'runit', 'openrc-init']);

const checkScript = [
  `b=$(cat ${BOOT_ID}) || exit 3`,
  `printf '%s\\0' "$b"`,
  `if [ -e ${REBOOT_REQUIRED} ]; then printf 'needed\\0'; else printf 'not-needed\\0'; fi`,
  `head -c 1000 ${REBOOT_PKGS} 2>/dev/null | tr '\\n\\0' '  '; printf '\\0'`,
  'if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then printf systemctl',
  'elif command -v shutdown >/dev/null 2>&1; then printf shutdown',
  'elif command -v reboot >/dev/null 2>&1; then printf reboot; fi',
  `printf '\\0'; tr -d '\\n\\0' < /proc/1/comm 2>/dev/null; printf '\\0'; id -u`,
].join('\n');

/** The state from the check script's answer (fields split by NUL). */
export function parseCheck(out: string, o: { host: string; reconnectable: boolean }): RebootState {
  const [bootId = '', needed = '', pkgs = '', how = '', pid1 = '', uid = ''] = out.split('\0');
  if (!/^[0-9a-f-]{36}$/.test(bootId.trim())) throw new StepError(`cannot read the boot id of ${o.host} (${BOOT_ID} said ${JSON.stringify(bootId.slice(0, 80))}): is this a Linux host?`);
  return {
    host: o.host,
    bootId: bootId.trim(),
    needed: needed === 'needed',
    pkgs: pkgs.trim().replace(/\s+/g, ' '),
    how: how === 'systemctl' || (INITS.has(pid1) && (how === 'shutdown' || how === 'reboot')) ? (how as RebootHow) : null,
    pid1,
    root: uid.trim() === '0',
    reconnectable: o.reconnectable,
  };
}

async function checkReboot(ctx: StepContext, _p: RebootParams): Promise<RebootState> {
  const r = await ctx.exec(checkScript, { timeoutMs: 30_000 });
  if (r.code !== 0) throw new StepError(`cannot read the boot id of ${ctx.host}: ${r.stderr.trim() || `exit ${r.code}`}`);
  return parseCheck(r.stdout, { host: ctx.host, reconnectable: ctx.connection !== undefined });
}

const seconds = (ms: number) => `${Math.round(ms / 1000)} s`;
const shortId = (id: string) => id.slice(0, 8);

export function planReboot(p: RebootParams, s: RebootState, _env?: PlanEnv): Plan<RebootUndo> {
  if (p.only_if_needed && !s.needed) {
    return { changed: false, skipped: true, summary: `no reboot needed: ${REBOOT_REQUIRED} does not exist on ${s.host}`, undo: null };
  }
  if (!s.reconnectable) {
    throw new StepError(`${s.host} is reached without SSH (local): rebooting it would end the run that asks for it, so a reboot step runs on SSH hosts only`);
  }
  if (!s.how) {
    throw new StepError(
      `${s.host} cannot be rebooted: its PID 1 is ${s.pid1 || 'unknown'}, not systemd or an init that shutdown -r restarts (a container without an init system?). Reboot it by its own means, or leave the reboot step out for this host (when:)`,
    );
  }
  if (!s.root) throw new StepError(`rebooting ${s.host} needs root: log in as root, or use sudo: true on the step or the recipe (or --sudo)`);
  const why = s.needed ? `; ${REBOOT_REQUIRED} asks for it${s.pkgs ? ` (${s.pkgs})` : ''}` : '';
  return {
    changed: true,
    summary: `reboot ${s.host} (${REBOOT_COMMAND[s.how]}${why}), then wait up to ${seconds(p.timeout)} for a new boot; a rollback of later steps will not undo the reboot`,
    undo: { kind: 'reboot', bootBefore: s.bootId },
    action: 'change',
  };
}

/** Where the detached reboot leaves what its command said when it failed (in /run: gone with a reboot that worked). */
export const failedFile = (runId: string) => `/run/hostsmith-reboot-${runId.replace(/[^A-Za-z0-9_.-]/g, '_')}.err`;

/**
 * Asks the host to reboot a second from now, detached (its own session, no run tag: recover stops
 * what carries it), so the exec returns cleanly; the message goes to the log and logged-in users.
 */
export function rebootScript(how: RebootHow, message: string, runId: string): string {
  const err = quote(failedFile(runId));
  const cmd = `sleep 1; ${REBOOT_COMMAND[how]} > ${err} 2>&1 || echo "exit $?" >> ${err}`;
  return [
    `msg=${quote(message)}`,
    'logger -t hostsmith -- "$msg" 2>/dev/null || true',
    'if command -v wall >/dev/null 2>&1; then printf "%s\\n" "$msg" | timeout 5 wall 2>/dev/null || true; fi',
    `rm -f -- ${err}`,
    `(cd / && exec env -u HOSTSMITH_RUN setsid sh -c ${quote(cmd)} </dev/null >/dev/null 2>&1) &`,
  ].join('\n');
}

/** One poll of the host: its boot id, whether it still asks for a reboot, and what a failed reboot command said. */
export const pollScript = (runId: string) =>
  [`cat ${BOOT_ID}`, `if [ -e ${REBOOT_REQUIRED} ]; then echo needed; else echo not-needed; fi`, `head -c 2000 -- ${quote(failedFile(runId))} 2>/dev/null || true`].join('\n');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A poll's answer: the boot id and the rest. */
export function parsePoll(out: string): { bootId: string; needed: boolean; failed: string } {
  const [bootId = '', needed = '', ...rest] = out.split('\n');
  return { bootId: bootId.trim(), needed: needed === 'needed', failed: rest.join('\n').trim() };
}

async function applyReboot(ctx: StepContext, p: RebootParams, _plan: Plan<RebootUndo>, s: RebootState) {
  const connection = ctx.connection;
  if (!connection || !s.how) throw new StepError(`${ctx.host}: this run cannot make its connection again, so it cannot reboot the host`);
  const how = s.how;
  const before = s.bootId;
  const started = Date.now();
  const deadlineMs = started + p.timeout;
  const rebootedAt = new Date(started).toISOString();
  const message = p.message ?? `Reboot by hostsmith (run ${ctx.runId}, step ${ctx.step})`;
  const asked = await ctx.exec(rebootScript(how, message, ctx.runId), { timeoutMs: 30_000 });
  if (asked.code !== 0) throw new StepError(`could not ask ${ctx.host} to reboot (exit ${asked.code}): ${asked.stderr.trim() || 'no message'}`);

  let last = 'it still ran the boot it ran before';
  let down = false;
  for (;;) {
    const left = deadlineMs - Date.now();
    if (left <= 0) break;
    try {
      // A fresh login each time: the old one dies with the host, and a dead link may take a while to notice.
      await connection.reconnect(Math.max(1000, left));
      const r = await ctx.exec(pollScript(ctx.runId), { timeoutMs: Math.max(1000, Math.min(10_000, left)) });
      const seen = parsePoll(r.stdout);
      if (r.code === 0 && /^[0-9a-f-]{36}$/.test(seen.bootId) && seen.bootId !== before) {
        await connection.rebooted();
        if (how === 'systemctl') {
          // Let the new boot settle (the later steps may start services) — bounded, and a degraded system is fine.
          const settle = Math.max(1, Math.min(120, Math.floor((deadlineMs - Date.now()) / 1000)));
          await ctx.exec(`timeout ${settle} systemctl is-system-running --wait >/dev/null 2>&1; true`, { timeoutMs: settle * 1000 + 5000 }).catch((e: unknown) => {
            if (e instanceof ConnectError) throw e;
          });
        }
        const back = Date.now() - started;
        const state: RebootState = { ...s, bootId: seen.bootId, needed: seen.needed, pkgs: seen.needed ? s.pkgs : '' };
        const undo: RebootUndo = { kind: 'reboot', bootBefore: before, bootAfter: seen.bootId, rebootedAt };
        return { state, undo, summary: `rebooted ${ctx.host} (${REBOOT_COMMAND[how]} at ${rebootedAt}; back after ${seconds(back)}, boot ${shortId(before)}… → ${shortId(seen.bootId)}…)` };
      }
      if (seen.failed) throw new StepError(`${REBOOT_COMMAND[how]} failed on ${ctx.host}, which was not rebooted: ${seen.failed}`);
      last = 'it still ran the boot it ran before';
    } catch (e) {
      if (!(e instanceof ConnectError)) throw e;
      // A host key or login refused is final (the reconnect says so at once): not a slow boot.
      if (/host key|authentication|password|no SSH credentials/i.test(e.message)) throw e;
      down = true;
      last = e.message.startsWith(`${ctx.host}: `) ? e.message.slice(ctx.host.length + 2) : e.message;
    }
    await sleep(Math.min(1000, Math.max(0, deadlineMs - Date.now())));
  }
  const waited = seconds(Date.now() - started);
  if (last === 'it still ran the boot it ran before' && !down) {
    // Still answering on the same boot: the link is fine, so the run rolls back as for any failed step.
    throw new StepError(
      `${ctx.host} was not rebooted: ${waited} after ${REBOOT_COMMAND[how]} it still runs boot ${before}. Check that the login may reboot it and what it logged (journalctl -b, /var/log/syslog)`,
    );
  }
  throw new ConnectError(
    ctx.host,
    `did not come back within ${waited} after ${REBOOT_COMMAND[how]} at ${rebootedAt} (last try: ${last}). Check on its console whether it booted and sshd started, and that its address and host key are unchanged`,
    { waited: true },
  );
}

/** The boot id the host runs now, for what a rollback says. */
async function bootNow(ctx: StepContext): Promise<string | undefined> {
  const r = await ctx.exec(`cat ${BOOT_ID}`, { timeoutMs: 10_000 });
  const id = r.stdout.trim();
  return r.code === 0 && /^[0-9a-f-]{36}$/.test(id) ? id : undefined;
}

/** What a rollback that crosses the reboot says: nothing to roll back, and when the host was rebooted. */
export function rollbackNote(undo: RebootUndo, now: string | undefined): string {
  if (undo.rebootedAt) return `nothing to roll back; the host was rebooted at ${undo.rebootedAt}${undo.bootAfter ? ` (boot ${shortId(undo.bootBefore)}… → ${shortId(undo.bootAfter)}…)` : ''}`;
  if (now === undefined) return `nothing to roll back; the host was rebooted during the run (boot ${shortId(undo.bootBefore)}… before it)`;
  if (now === undo.bootBefore) return `nothing to roll back; the host was not rebooted (it still runs boot ${shortId(now)}…)`;
  return `nothing to roll back; the host was rebooted during the run (boot ${shortId(undo.bootBefore)}… → ${shortId(now)}…)`;
}

function undoSummary(u: UndoData): string {
  const at = str(u, 'rebootedAt');
  return `nothing to roll back: a reboot cannot be undone${at ? ` (the host was rebooted at ${at})` : ''}`;
}

function undoMismatch(_p: RebootParams, u: UndoData): string | undefined {
  if (u.kind !== 'reboot') return 'its undo data is not a reboot’s';
  if (typeof u.bootBefore !== 'string' || !/^[0-9a-f-]{36}$/.test(u.bootBefore)) return 'its undo data holds no boot id';
  return undefined;
}

/** A reboot is not run again after a rollback: by the controller, by undo or recover, nor by the watchdog. */
const NOT_AGAIN = 'a reboot is not run again after a rollback (reboot by hand if what was put back needs one)';

export const rebootStep: StepType<RebootParams, RebootState, RebootUndo> = {
  type: 'reboot',
  schema: rebootSchema,
  check: checkReboot,
  plan: planReboot,
  apply: applyReboot,
  async rollback(ctx, _p, undo) {
    return { note: rollbackNote(undo, undo.rebootedAt ? undefined : await bootNow(ctx)) };
  },
  nothingToRollBack: true,
  hostRollback: () => `echo ${quote('reboot: nothing to roll back; the host was rebooted during the run')}`,
  hostRun: () => `echo ${quote(`reboot: ${NOT_AGAIN}`)}`,
  gone: async () => NOT_AGAIN,
  // The boot it read: a host rebooted since a plan is not the host planned; recover tells a reboot
  // that happened from one that did not. Whether the host asks for one counts only when the step asks.
  stateKey: (p, s) => ({ bootId: s.bootId, ...(p.only_if_needed ? { needed: s.needed } : {}) }),
  footprint: () => ({
    reads: [`path:${BOOT_ID}`, `path:${REBOOT_REQUIRED}`, 'path:/run/systemd/system'],
    // What a boot starts afresh: every service's running state, the live firewall, the volatile
    // folders. Files elsewhere are kept, so the steps that read only them plan as usual.
    writes: ['service:*', 'nft:*', 'path:/run', 'path:/var/run', 'path:/tmp', 'path:/proc', 'path:/sys', 'path:/dev'],
  }),
  undoSummary,
  undoMismatch,
  irreversibleWhy: 'a reboot cannot be undone',
};
