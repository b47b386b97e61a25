/**
 * `hostname`: the host's name in /etc/hostname (what it boots with), in the running kernel, and
 * (hosts_entry) on the 127.0.1.1 line of /etc/hosts, the Debian convention that lets the name
 * and the fully qualified one resolve without DNS (`hostname -f`).
 *
 * The two files go through file-state.ts (guarded writes, root-only backups, no writing through
 * a planted link); the live name is one guarded `hostname` call, undone by setting back the name
 * the check found. Each part is planned on its own, so a rerun changes only what drifted.
 */
import { z } from 'zod';
import { StepError } from '../../errors.js';
import { guardScript, runOneExec } from '../../shell/one-exec.js';
import { quote } from '../../shell/script.js';
import { flag } from '../accounts.js';
import {
  applyPath,
  checkPath,
  checkScript as pathCheckScript,
  pathKey,
  pathUndoSummary,
  pathWrote,
  planPath,
  rollbackPath,
  rollbackPathScript,
  type FileUndo,
  type PathState,
  type Wanted,
} from '../file-state.js';
import { applyParts, partsUndoMismatch, readAnswer, rollbackParts, rollbackPartsScript, splitAnswer, textOf, type Part } from '../path-parts.js';
import { runOk, type Plan, type PlanEnv, type StepContext, type StepType } from '../step.js';
import { str, type UndoData } from '../undo-text.js';

export const HOSTNAME_FILE = '/etc/hostname';
export const HOSTS_FILE = '/etc/hosts';
/** The address Debian's installer maps the host's own names to. */
export const HOSTS_ADDRESS = '127.0.1.1';

/** One DNS label (RFC 1123): letters, digits, inner hyphens, at most 63. */
const LABEL = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
/** Two or more labels, dotted. */
const FQDN = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$/;

export const hostnameSchema = z
  .object({
    name: z
      .string()
      .regex(LABEL, 'a host name is 1 to 63 letters, digits and hyphens, not starting or ending with a hyphen')
      .refine((s) => !s.includes('.'), 'name is the short host name, without dots; give the full name as fqdn'),
    fqdn: z
      .string()
      .max(253, 'a fully qualified name is at most 253 characters')
      .regex(FQDN, 'a fully qualified name is dotted labels of letters, digits and inner hyphens, such as web1.example.org')
      .optional(),
    hosts_entry: flag.default(true),
  })
  .strict()
  .superRefine((p, ctx) => {
    // hostname -f reads the first name on the line that holds the short one: they must agree.
    if (p.fqdn !== undefined && p.fqdn.split('.')[0]!.toLowerCase() !== p.name.toLowerCase()) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['fqdn'], message: `fqdn must start with the name (${p.name}.…), as hostname -f expects` });
    }
    if (p.fqdn !== undefined && !p.hosts_entry) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['fqdn'], message: 'fqdn is written to /etc/hosts only: it needs hosts_entry: true' });
    }
  });

export type HostnameParams = z.output<typeof hostnameSchema>;

export interface HostnameState {
  /** The running kernel's name (uname -n). */
  live: string;
  /** systemd runs (/run/systemd/system): the live name is set through hostnamectl. */
  systemd: boolean;
  hostname: PathState;
  /** Read only with hosts_entry. */
  hosts?: PathState;
}

export interface HostnameUndo {
  /** The name the step set (checked against the step's params by undoMismatch). */
  name: string;
  hostname: FileUndo | null;
  hosts: FileUndo | null;
  /** The live name to set back; null when the step did not change it. */
  live: string | null;
}

/** The names the 127.0.1.1 line maps: the full name first, as hostname -f reads it. */
export const hostsNames = (p: HostnameParams): string[] => (p.fqdn !== undefined ? [p.fqdn, p.name] : [p.name]);

const fieldsOf = (line: string) => line.replace(/#.*/, '').trim().split(/\s+/).filter(Boolean);

/**
 * /etc/hosts with 127.0.1.1 mapped to the names: the first 127.0.1.1 line is replaced (its names,
 * any comment on it), else a line is added after the last 127.0.0.1 line (where Debian puts it),
 * else at the end. An absent file is made with the localhost line and ours. Returns the text as
 * given (the same string) when the line is already right; `what` says what changes.
 */
export function editHosts(text: string | null, p: HostnameParams): { text: string; what: string } {
  const names = hostsNames(p);
  const line = `${HOSTS_ADDRESS}\t${names.join(' ')}`;
  if (text === null) return { text: `127.0.0.1\tlocalhost\n${line}\n`, what: `create ${HOSTS_FILE} with ${JSON.stringify(line)}` };
  const lines = text.split('\n');
  // A final newline leaves an empty last item: kept so the join puts it back.
  const ours = lines.findIndex((l) => fieldsOf(l)[0] === HOSTS_ADDRESS);
  if (ours >= 0) {
    const had = fieldsOf(lines[ours]!).slice(1);
    if (had.join(' ') === names.join(' ')) return { text, what: `${HOSTS_FILE} maps ${HOSTS_ADDRESS} to ${names.join(' ')}` };
    const cr = lines[ours]!.endsWith('\r') ? '\r' : '';
    lines[ours] = `${line}${cr}`;
    return { text: lines.join('\n'), what: `${HOSTS_FILE}: ${HOSTS_ADDRESS} ${had.join(' ') || '(no names)'} → ${names.join(' ')}` };
  }
  let at = -1;
  lines.forEach((l, i) => {
    if (fieldsOf(l)[0] === '127.0.0.1') at = i + 1;
  });
  const endsWithNewline = text === '' || text.endsWith('\n');
  if (at < 0 || at === lines.length) {
    const body = endsWithNewline ? text : `${text}\n`;
    return { text: `${body}${line}\n`, what: `${HOSTS_FILE}: add ${JSON.stringify(line)} at the end` };
  }
  lines.splice(at, 0, `${line}${lines[at - 1]!.endsWith('\r') ? '\r' : ''}`);
  return { text: lines.join('\n'), what: `${HOSTS_FILE}: add ${JSON.stringify(line)} after line ${at}` };
}

/** What the check prints first: the kernel's name and whether systemd runs, each NUL-terminated. */
const LIVE_FIELDS = [`printf '%s\\0' "$(uname -n)"`, "if [ -d /run/systemd/system ]; then printf 'systemd\\0'; else printf 'other\\0'; fi"].join('\n');

/** One round trip for the name and /etc/hostname, one more for /etc/hosts. */
export async function checkHostname(ctx: StepContext, p: HostnameParams): Promise<HostnameState> {
  const raw = await readAnswer(ctx, `${LIVE_FIELDS}\n${pathCheckScript(HOSTNAME_FILE)}`, 'the host name');
  const s = parseHostnameCheck(raw);
  if (p.hosts_entry) s.hosts = await checkPath(ctx, HOSTS_FILE);
  return s;
}

export function parseHostnameCheck(raw: Buffer): HostnameState {
  const { fields, state } = splitAnswer(raw, 2, HOSTNAME_FILE, 'the host name');
  return { live: fields[0]!, systemd: fields[1] === 'systemd', hostname: state };
}

const fileContent = (p: HostnameParams) => Buffer.from(`${p.name}\n`, 'utf8');

/** /etc/hostname already names the host: its one word is the name (a missing final newline is fine). */
function hostnameFileRight(p: HostnameParams, s: PathState): boolean {
  return s.kind === 'file' && (s.content ?? Buffer.alloc(0)).toString('utf8').trim() === p.name;
}

interface FilePart {
  wanted: Wanted;
  plan: Plan<FileUndo>;
  what: string;
}

function hostnameFilePart(p: HostnameParams, s: HostnameState, env: PlanEnv): FilePart | null {
  if (hostnameFileRight(p, s.hostname)) return null;
  const old = textOf(HOSTNAME_FILE, s.hostname);
  const wanted: Wanted = { path: HOSTNAME_FILE, state: 'present', content: fileContent(p) };
  const what = old === null ? `create ${HOSTNAME_FILE}` : `${HOSTNAME_FILE}: ${JSON.stringify(old.trim())} → ${JSON.stringify(p.name)}`;
  return { wanted, plan: planPath(wanted, s.hostname, env), what };
}

function hostsFilePart(p: HostnameParams, s: HostnameState, env: PlanEnv): FilePart | null {
  if (!p.hosts_entry || !s.hosts) return null;
  const old = textOf(HOSTS_FILE, s.hosts);
  const { text, what } = editHosts(old, p);
  if (text === old) return null;
  const wanted: Wanted = { path: HOSTS_FILE, state: 'present', content: Buffer.from(text, 'utf8') };
  return { wanted, plan: planPath(wanted, s.hosts, env), what };
}

export function planHostname(p: HostnameParams, s: HostnameState, env: PlanEnv): Plan<HostnameUndo> {
  const file = hostnameFilePart(p, s, env);
  const hosts = hostsFilePart(p, s, env);
  const live = s.live !== p.name;
  if (!file && !hosts && !live) {
    const where = [HOSTNAME_FILE, ...(p.hosts_entry ? [`${HOSTS_FILE} (${HOSTS_ADDRESS} ${hostsNames(p).join(' ')})`] : []), 'the running system'];
    return { changed: false, summary: `host name is ${p.name} in ${where.join(', ')}`, undo: null };
  }
  const parts = [file?.what, hosts?.what, live ? `live: ${s.live} → ${p.name}` : undefined].filter((x): x is string => !!x);
  const diff = [file?.plan.diff, hosts?.plan.diff].filter(Boolean).join('');
  return {
    changed: true,
    summary: `set host name ${p.name} (${parts.join('; ')})`,
    ...(diff ? { diff } : {}),
    undo: { name: p.name, hostname: file?.plan.undo ?? null, hosts: hosts?.plan.undo ?? null, live: live ? s.live : null },
  };
}

/**
 * Shell: sets the kernel's name and reads it back. With systemd, hostnamectl first (static and
 * transient, never the pretty name), so hostnamed knows; then the name is checked and, when
 * hostnamed left the kernel's alone (it does when the static name is already what it is asked
 * for), set with hostname(1), the sethostname call itself.
 */
export function setLiveScript(name: string, viaSystemd: boolean): string {
  const n = quote(name);
  return [
    ...(viaSystemd ? [`hostnamectl --static --transient set-hostname ${n} || echo 'hostsmith: hostnamectl failed; setting the name with hostname(1)' >&2`] : []),
    `if [ "$(uname -n)" != ${n} ]; then`,
    `  if command -v hostname >/dev/null 2>&1; then hostname ${n} || exit 1`,
    `  else echo 'hostsmith: no hostname command on this host (package hostname)' >&2; exit 1; fi`,
    'fi',
    `[ "$(uname -n)" = ${n} ] || { printf 'hostsmith: the name is still %s\\n' "$(uname -n)" >&2; exit 1; }`,
  ].join('\n');
}

/** What the live guard reads: the kernel's name as the check printed it. */
const READ_LIVE = 'printf %s "$(uname -n)"';

async function setLive(ctx: StepContext, p: HostnameParams, old: string, viaSystemd: boolean): Promise<string> {
  const { r, read, failed } = await runOneExec(
    ctx,
    { guard: guardScript(READ_LIVE, Buffer.from(old, 'utf8')), stages: [{ name: 'live', script: setLiveScript(p.name, viaSystemd) }], read: READ_LIVE },
    `the host name changed from ${old} after it was read`,
  );
  if (failed) {
    const said = failed.said || r.stdout.trim();
    throw new StepError(`setting the running host name to ${p.name} failed (exit ${failed.code})${said ? `: ${said}` : ''}`, { code: failed.code, stderr: r.stderr });
  }
  return read ?? p.name;
}

/** Rollback of the live name: the one found, set directly (hostnamed reads the kernel's name as it is). */
const restoreLiveScript = (old: string) => setLiveScript(old, false);

/** A file part of the apply: written as planned, put back from its undo data. */
const filePart = (ctx: StepContext, part: FilePart, was: PathState, keep: (now: PathState) => void): Part => ({
  apply: async () => keep((await applyPath(ctx, part.wanted, part.plan, was)) ?? was),
  rollback: () => rollbackPath(ctx, part.plan.undo!),
});

const restoreLive = (ctx: StepContext, old: string) => runOk(ctx, restoreLiveScript(old), `setting the host name back to ${old}`).then(() => undefined);

function undoSummary(u: UndoData): string {
  const parts = [
    typeof u.live === 'string' ? `set the running host name back to ${u.live}` : '',
    u.hosts && typeof u.hosts === 'object' ? pathUndoSummary(u.hosts as UndoData) : '',
    u.hostname && typeof u.hostname === 'object' ? pathUndoSummary(u.hostname as UndoData) : '',
  ].filter(Boolean);
  return parts.length ? parts.join('; ') : `nothing to put back for host name ${str(u, 'name') ?? '?'}`;
}

/** A name the kernel may hold, safe to hand to hostname(1): no option, no blank or control character. */
const liveNameOk = (v: string) => v.length > 0 && v.length <= 64 && !v.startsWith('-') && !/[\s\0-\x1f\x7f]/.test(v);

function undoMismatch(p: HostnameParams, u: UndoData): string | undefined {
  if (u.name !== p.name) return `its undo data is for host name ${JSON.stringify(u.name)}, not ${p.name}`;
  if (u.live !== null && u.live !== undefined && (typeof u.live !== 'string' || !liveNameOk(u.live))) return `its undo data holds a live name ${JSON.stringify(u.live)} that hostname(1) cannot take`;
  return partsUndoMismatch(u, [
    ['hostname', HOSTNAME_FILE],
    ['hosts', HOSTS_FILE],
  ]);
}

export const hostnameStep: StepType<HostnameParams, HostnameState, HostnameUndo> = {
  type: 'hostname',
  schema: hostnameSchema,
  check: checkHostname,
  guarded: true,
  plan: planHostname,
  async apply(ctx, p, plan, s) {
    const undo = plan.undo!;
    const env = { runId: ctx.runId, step: ctx.step, backupDir: ctx.backupDir };
    // The same edits as planned (the engine held the state to the plan's), with the plan's own
    // undo data: its backup paths are the ones journaled.
    const asPlanned = (part: FilePart | null, u: FileUndo, path: string): FilePart => {
      if (!part) throw new StepError(`${path} no longer needs the change that was planned; make a new plan`);
      return { ...part, plan: { changed: true, summary: plan.summary, undo: u } };
    };
    const state: HostnameState = { ...s };
    const parts: Part[] = [];
    if (undo.hostname)
      parts.push(
        filePart(ctx, asPlanned(hostnameFilePart(p, s, env), undo.hostname, HOSTNAME_FILE), s.hostname, (now) => {
          state.hostname = now;
        }),
      );
    if (undo.hosts && s.hosts)
      parts.push(
        filePart(ctx, asPlanned(hostsFilePart(p, s, env), undo.hosts, HOSTS_FILE), s.hosts, (now) => {
          state.hosts = now;
        }),
      );
    const old = undo.live;
    if (old !== null)
      parts.push({
        apply: async () => {
          state.live = await setLive(ctx, p, old, s.systemd);
        },
        rollback: () => restoreLive(ctx, old),
      });
    await applyParts(parts);
    return { state };
  },
  // Newest first: the live name, then the files from their backups.
  rollback: (ctx, _p, undo) =>
    rollbackParts([
      ...(undo.live !== null ? [() => restoreLive(ctx, undo.live!)] : []),
      ...(undo.hosts ? [() => rollbackPath(ctx, undo.hosts!)] : []),
      ...(undo.hostname ? [() => rollbackPath(ctx, undo.hostname!)] : []),
    ]),
  hostRollback: (_p, undo) =>
    rollbackPartsScript([
      ...(undo.live !== null ? [restoreLiveScript(undo.live)] : []),
      ...(undo.hosts ? [rollbackPathScript(undo.hosts)] : []),
      ...(undo.hostname ? [rollbackPathScript(undo.hostname)] : []),
    ]),
  stateKey: (_p, s) => ({ live: s.live, systemd: s.systemd, hostname: pathKey(s.hostname), hosts: s.hosts ? pathKey(s.hosts) : null }),
  footprint: (p) => {
    // The kernel's name is /proc/sys/kernel/hostname: a sysctl step on kernel.hostname meets it.
    const writes = [`path:${HOSTNAME_FILE}`, ...(p.hosts_entry ? [`path:${HOSTS_FILE}`] : []), 'path:/proc/sys/kernel/hostname'];
    return { reads: [...writes, 'path:/run/systemd/system'], writes };
  },
  wrote: (_p, undo) => [...pathWrote(undo?.hostname ?? null), ...pathWrote(undo?.hosts ?? null)],
  undoSummary,
  undoMismatch,
};
