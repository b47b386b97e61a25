/**
 * `firewall`: an nftables ruleset, loaded atomically with `nft -f` and kept where the host loads
 * it at boot. Two forms:
 * - the whole ruleset (no `table`): written to /etc/nftables.conf, which Debian's nftables.service
 *   loads at boot, beginning with `flush ruleset` so that loading it replaces everything;
 * - one table (`table: { family, name }` with the table's body): written to a drop-in file,
 *   /etc/nftables.d/<family>-<name>.nft, that creates, deletes and makes the table again in one
 *   transaction (so loading it replaces that table alone), and /etc/nftables.conf made to include
 *   that folder (a line added at its end; the file made when there is none).
 *
 * The check validates the new ruleset with `nft -c -f` (nothing is changed) and renders it in a
 * throwaway network namespace (`unshare -n`), so that what it will be can be compared with what is
 * live (`nft -s list ruleset` or `list table`, without counters): the plan's diff is between the
 * two as nft prints them, and a host where both and the file already match is left alone.
 *
 * Before anything changes, the journal holds the live ruleset (or table) as nft printed it and the
 * files' undo data (their bytes in the run's root-only backups). Rollback, undo, recover and the
 * lockout watchdog (one shell script) load the old ruleset again in one `nft -f` transaction
 * (`flush ruleset` and the old rules; for a table, delete-and-add, or a delete when the table was
 * not there) and put the files back.
 *
 * A ruleset can cut the very connection that loads it, before the lockout watchdog (armed after
 * the steps, over that connection) could exist: so each live load first leaves the host a timer
 * that loads the old ruleset again unless the controller gets back in to stop it (REVERT_SECONDS).
 */
import { posix } from 'node:path';
import { z } from 'zod';
import { ConnectError, StepError } from '../../errors.js';
import { unifiedDiff } from '../../render/diff.js';
import { guardScript, runOneExec } from '../../shell/one-exec.js';
import { quote } from '../../shell/script.js';
import {
  renderSource,
  applyPath,
  checkPath,
  checkScript as pathCheckScript,
  parseCheck,
  pathKey,
  pathUndoMismatch,
  pathUndoSummary,
  pathWrote,
  planPath,
  rollbackPath,
  rollbackPathScript,
  sourceProblems,
  type FileUndo,
  type PathState,
  type Wanted,
} from '../file-state.js';
import { backupDirsScript, backupFolder } from '../backup.js';
import { applyParts, rollbackParts, rollbackPartsScript, textOf, type Part } from '../path-parts.js';
import { tail, type Plan, type PlanEnv, type StepContext, type StepType } from '../step.js';
import type { UndoData } from '../undo-text.js';

/** The file Debian's nftables.service loads at boot (`nft -f /etc/nftables.conf`). */
export const NFT_CONF = '/etc/nftables.conf';
/** Where the table form keeps its drop-ins, included from NFT_CONF. */
export const NFT_DIR = '/etc/nftables.d';
export const INCLUDE_LINE = `include "${NFT_DIR}/*.nft"`;
/** nft lives in /usr/sbin, which a login shell of a user other than root may not have on its PATH. */
const PATH_LINE = 'PATH="$PATH:/usr/sbin:/sbin"; export PATH';

export const FAMILIES = ['ip', 'ip6', 'inet', 'arp', 'bridge', 'netdev'] as const;
/** A table name that is also a safe file name: letters, digits, "_" and "-", starting with a letter. */
const TABLE_NAME = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/;

export const firewallSchema = z
  .object({
    /** The ruleset (whole form) or the table's body (table form), as text. */
    content: z.string().optional(),
    /** A Handlebars template with it, looked up as the template step's `src` is. */
    src: z.string().min(1).optional(),
    /** Names the template may use beyond the recipe's. */
    vars: z.record(z.unknown()).optional(),
    table: z
      .object({
        family: z.enum(FAMILIES),
        name: z.string().regex(TABLE_NAME, 'a table name is letters, digits, "_" and "-", starting with a letter (it also names the drop-in file)'),
      })
      .strict()
      .optional(),
  })
  .strict()
  .superRefine((p, ctx) => {
    if (p.content === undefined && p.src === undefined) ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'give the ruleset as content or as a template in src', path: ['content'] });
    if (p.content !== undefined && p.src !== undefined) ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'give either content or src, not both', path: ['src'] });
    if (p.vars !== undefined && p.src === undefined) ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'vars are for a template in src', path: ['vars'] });
  });

export type FirewallParams = z.output<typeof firewallSchema> & { rendered?: string };

export type TableId = { family: (typeof FAMILIES)[number]; name: string };

export interface FirewallState {
  /** The live ruleset (or table) as `nft -s list` prints it; null: the table is not there. */
  live: string | null;
  /**
   * What it will be once the file is loaded, as nft prints it (rendered in a throwaway network
   * namespace); null when that could not be done (`unrendered` says why) or was not asked for.
   */
  wanted: string | null;
  unrendered?: string;
  /** What `nft -c -f` said of the new ruleset, when it refused it. */
  invalid?: string;
  file: PathState;
  /** /etc/nftables.conf (table form only: it must include the drop-ins). */
  conf?: PathState;
}

export interface FirewallUndo {
  table: TableId | null;
  file: FileUndo | null;
  conf: FileUndo | null;
  /** The live ruleset (or table) before, as nft printed it (null: the table was not there); null itself: live was not changed. */
  live: { before: string | null } | null;
}

const tableText = (t: TableId) => `table ${t.family} ${t.name}`;

/** The drop-in file of a table, or /etc/nftables.conf for the whole ruleset. */
export const fileOf = (p: Pick<FirewallParams, 'table'>): string => (p.table ? `${NFT_DIR}/${p.table.family}-${p.table.name}.nft` : NFT_CONF);

/** What the step lists: the ruleset, or its table. */
const whatOf = (t: TableId | null | undefined) => (t ? tableText(t) : 'the nftables ruleset');

/** Content the journal keeps by digest only (a rendered template): there is no text to check then. */
const DIGEST = /^sha256:[0-9a-f]{64} \(\d+ bytes\)$/;

/** The text given (content, or the rendered template); null when only its digest is known (undo, recover). */
function givenText(p: FirewallParams): string | null {
  const t = p.rendered ?? p.content;
  if (t === undefined) throw new Error(`firewall ${p.src ?? ''} was not rendered before use`);
  return p.rendered !== undefined && DIGEST.test(p.rendered) ? null : t;
}

const withNewline = (t: string) => (t === '' || t.endsWith('\n') ? t : `${t}\n`);

/**
 * The whole ruleset as written: it must begin with `flush ruleset`, so that loading it (at boot or
 * by hand) replaces what is there rather than adding to it; the line is put first when the text
 * does not start with it (after a `#!` line, which must stay first).
 */
export function wholeText(given: string): string {
  const text = withNewline(given);
  const lines = text.split('\n');
  const first = lines.find((l) => l.trim() !== '' && !l.trim().startsWith('#'));
  if (first !== undefined && /^flush\s+ruleset\s*;?$/.test(first.trim())) return text;
  if (lines[0]?.startsWith('#!')) return [lines[0], 'flush ruleset', ...lines.slice(1)].join('\n');
  return `flush ruleset\n${text}`;
}

/**
 * The drop-in of a table: the table made (a no-op when it is there) and deleted, so that the third
 * statement makes it anew, all in the one transaction of an `nft -f`; the body as given inside.
 */
export function tableFileText(t: TableId, body: string): string {
  const head = tableText(t);
  return [
    `# ${head}, kept by hostsmith: loading this file (nft -f) replaces that table alone, in one`,
    `# transaction; ${NFT_CONF} includes it at boot.`,
    head,
    `delete ${head}`,
    `${head} {`,
    `${withNewline(body)}}`,
    '',
  ].join('\n');
}

/** The file's bytes as they will be written and loaded; null when only a digest is known. */
export function fileText(p: FirewallParams): string | null {
  const given = givenText(p);
  if (given === null) return null;
  return p.table ? tableFileText(p.table, given) : wholeText(given);
}

/** The nftables.conf a table's drop-in needs when there is none: it flushes, then loads the drop-ins. */
export const NEW_CONF = `#!/usr/sbin/nft -f\n# Made by hostsmith: the tables kept in ${NFT_DIR} are loaded at boot.\nflush ruleset\n\n${INCLUDE_LINE}\n`;

const includes = (line: string) => /^include\s+"\/etc\/nftables\.d\/\*\.nft"\s*;?\s*$/.test(line.trim());

/** nftables.conf with the drop-in folder included (the line added at its end); the same string when it already is. */
export function editConf(text: string | null): string {
  if (text === null) return NEW_CONF;
  if (text.split('\n').some(includes)) return text;
  return `${withNewline(text)}\n# Added by hostsmith: the tables kept in ${NFT_DIR}.\n${INCLUDE_LINE}\n`;
}

/**
 * Shell: prints the live ruleset (or table) as `nft -s list` does (no counters, which move by
 * themselves), without the final newline; a table that is not there prints `none`. The guard of
 * the live change and the read after it run the same function.
 */
export function liveScript(t: TableId | null | undefined): string {
  const fail = '{ printf \'%s\\n\' "$l" >&2; return 1; }';
  const body = t
    ? [
        `l=$(nft list tables 2>&1) || ${fail}`,
        `if printf '%s\\n' "$l" | grep -qxF ${quote(tableText(t))}; then`,
        `  l=$(nft -s list table ${t.family} ${quote(t.name)} 2>&1) || ${fail}`,
        `  printf 'table\\n%s' "$l"`,
        "else printf 'none'; fi",
      ]
    : [`l=$(nft -s list ruleset 2>&1) || ${fail}`, `printf '%s' "$l"`];
  return [PATH_LINE, 'hs_nft_live() {', ...body.map((l) => `  ${l}`), '}'].join('\n');
}

/** What liveScript prints for a live ruleset (or table) as the state holds it. */
export function liveAnswer(t: TableId | null | undefined, live: string | null): string {
  if (!t) return live ?? '';
  return live === null ? 'none' : `table\n${live}`;
}

function parseLive(t: TableId | null | undefined, raw: string): string | null {
  if (!t) return raw;
  if (raw === 'none') return null;
  if (!raw.startsWith('table\n')) throw new StepError(`cannot read ${tableText(t)}: unexpected answer from nft (${JSON.stringify(raw.slice(0, 80))})`);
  return raw.slice('table\n'.length);
}

/** How the new ruleset is listed in the throwaway namespace once loaded there. */
const listWanted = (t: TableId | null | undefined) => (t ? `nft -s list table ${t.family} ${quote(t.name)}` : 'nft -s list ruleset');

/**
 * One round trip, the new file's bytes on stdin. Seven NUL-terminated fields — whether nft is
 * there; the live ruleset (ok/err, text); what `nft -c -f` said (ok/bad/skip, text); the rendering
 * in a throwaway network namespace (ok/no/skip, text) — then what file-state's check prints for
 * the file. Nothing on the host changes: the check is nft's own, and the namespace goes with its
 * only process.
 */
export function checkScript(p: Pick<FirewallParams, 'table'>, withText: boolean): string {
  const file = fileOf(p);
  return [
    liveScript(p.table),
    "if ! command -v nft >/dev/null 2>&1; then printf 'nonft\\0\\0\\0\\0\\0\\0\\0'; exit 0; fi",
    "printf 'nft\\0'",
    `if l=$(hs_nft_live 2>&1); then printf 'ok\\0%s\\0' "$l"; else printf 'err\\0%s\\0' "$l"; fi`,
    ...(withText
      ? [
          // The file's bytes, kept whole (a final newline too).
          'w=$(cat; printf x); w=${w%x}',
          // nft names its input in messages: the file it will be loaded from, not /dev/stdin.
          `if c=$(printf '%s' "$w" | nft -c -f /dev/stdin 2>&1); then printf 'ok\\0\\0'; else printf 'bad\\0%s\\0' "$(printf '%s' "$c" | sed 's|/dev/stdin|'${quote(file)}'|g')"; fi`,
          "if ! command -v unshare >/dev/null 2>&1; then printf 'no\\0no unshare command (util-linux)\\0'",
          `elif r=$(printf '%s' "$w" | unshare -n sh -c ${quote(`nft -f /dev/stdin && ${listWanted(p.table)}`)} 2>&1); then printf 'ok\\0%s\\0' "$r"`,
          `else printf 'no\\0%s\\0' "$r"; fi`,
        ]
      : ["printf 'skip\\0\\0skip\\0\\0'"]),
    pathCheckScript(file),
  ].join('\n');
}

function fields(raw: Buffer, n: number, what: string): { fields: string[]; rest: Buffer } {
  const out: string[] = [];
  let at = 0;
  for (let i = 0; i < n; i++) {
    const end = raw.indexOf(0, at);
    if (end < 0) throw new StepError(`cannot read ${what}: the host's answer was cut short`);
    out.push(raw.subarray(at, end).toString('utf8'));
    at = end + 1;
  }
  return { fields: out, rest: raw.subarray(at) };
}

/** Why nft cannot be run by this login: a hint for the permission nft needs (CAP_NET_ADMIN). */
function rootHint(said: string): string {
  return /Operation not permitted|Permission denied/i.test(said) ? ' (nft needs root: log in as root, or use sudo: true on the recipe or step, or --sudo)' : '';
}

/** Reads what checkScript printed (the conf file is read apart, by the caller). */
export function parseFirewallCheck(raw: Buffer, p: Pick<FirewallParams, 'table'>): FirewallState {
  const what = whatOf(p.table);
  const { fields: f, rest } = fields(raw, 7, what);
  const [nft, liveHow, live, checkHow, checkSaid, renderHow, rendered] = f as [string, string, string, string, string, string, string];
  if (nft === 'nonft') throw new StepError(`nft is not installed on this host, so ${what} cannot be read or loaded: add a step before this one that installs it (package: { install: [nftables] })`);
  if (liveHow !== 'ok') throw new StepError(`cannot read the live ${what.replace(/^the /, '')} (nft list): ${tail(live, 5) || 'no output'}${rootHint(live)}`);
  const state: FirewallState = {
    live: parseLive(p.table, live),
    wanted: renderHow === 'ok' ? rendered : null,
    file: parseCheck(rest, fileOf(p)),
  };
  if (renderHow === 'no') state.unrendered = tail(rendered, 3) || 'it could not be loaded in a throwaway network namespace';
  if (checkHow === 'bad') state.invalid = tail(checkSaid, 12) || 'nft -c refused it';
  return state;
}

export async function checkFirewall(ctx: StepContext, p: FirewallParams): Promise<FirewallState> {
  const text = fileText(p);
  const script = checkScript(p, text !== null);
  const r = await ctx.exec(script, text === null ? {} : { stdin: Buffer.from(text, 'utf8') });
  if (r.code !== 0) throw new StepError(`cannot read ${whatOf(p.table)}: ${r.stderr.trim() || `exit ${r.code}`}`, { code: r.code, stderr: r.stderr });
  const s = parseFirewallCheck(r.stdoutRaw, p);
  if (p.table) s.conf = await checkPath(ctx, NFT_CONF);
  return s;
}

/** Listings compare without blank lines at either end (nft ends them with one; the shell drops it). */
const same = (a: string | null, b: string | null) => a !== null && b !== null && a.trim() === b.trim();

function filePlan(p: FirewallParams, s: FirewallState, env: PlanEnv): Plan<FileUndo> | null {
  const text = fileText(p);
  if (text === null) throw new StepError('the ruleset is known here by its digest only (from the journal): make a new plan from the recipe');
  const plan = planPath({ path: fileOf(p), state: 'present', content: Buffer.from(text, 'utf8') }, s.file, env);
  return plan.changed ? plan : null;
}

function confWanted(s: FirewallState): Wanted | null {
  if (!s.conf) return null;
  const old = textOf(NFT_CONF, s.conf);
  const next = editConf(old);
  return next === old ? null : { path: NFT_CONF, state: 'present', content: Buffer.from(next, 'utf8') };
}

function confPlan(p: FirewallParams, s: FirewallState, env: PlanEnv): Plan<FileUndo> | null {
  if (!p.table) return null;
  const w = confWanted(s);
  return w ? planPath(w, s.conf!, env) : null;
}

/** Does the live ruleset (or table) need loading: anything but exactly what the file makes, as nft prints both. */
const liveChanges = (s: FirewallState) => s.wanted === null || !same(s.live, s.wanted);

const liveLabel = (t: TableId | null | undefined) => `(live) nft list ${t ? `table ${t.family} ${t.name}` : 'ruleset'}`;

export function planFirewall(p: FirewallParams, s: FirewallState, env: PlanEnv): Plan<FirewallUndo> {
  const path = fileOf(p);
  if (s.invalid) throw new StepError(`the new ${p.table ? `${tableText(p.table)} (as ${path} would hold it)` : `ruleset for ${path}`} does not pass nft -c, so nothing was changed:\n${s.invalid}`);
  const file = filePlan(p, s, env);
  const conf = confPlan(p, s, env);
  const live = liveChanges(s);
  const what = whatOf(p.table);
  if (!file && !conf && !live) return { changed: false, summary: `${what} is loaded as ${path} has it${p.table ? ` (and ${NFT_CONF} includes ${NFT_DIR})` : ''}`, undo: null };
  const liveText = !live
    ? 'live: already so'
    : s.wanted === null
      ? `live: loaded again (the new ruleset could not be listed for a comparison: ${s.unrendered ?? 'no rendering'})`
      : p.table && s.live === null
        ? `live: create ${tableText(p.table)}`
        : `live: replace ${p.table ? tableText(p.table) : 'the ruleset'}`;
  const parts = [
    file ? `${file.action === 'create' ? 'create' : 'update'} ${path}` : `${path} as wanted`,
    ...(conf ? [`${conf.action === 'create' ? 'create' : 'update'} ${NFT_CONF} to include ${NFT_DIR}`] : []),
    liveText,
  ];
  const liveDiff = live ? unifiedDiff(liveLabel(p.table), s.live === null ? null : withNewline(s.live), s.wanted === null ? fileText(p) : withNewline(s.wanted)) : '';
  const diff = [liveDiff, file?.diff, conf?.diff].filter(Boolean).join('');
  return {
    changed: true,
    action: file?.action === 'create' && (!p.table || s.live === null) ? 'create' : 'change',
    summary: `load ${what} from ${path} (${parts.join('; ')})`,
    ...(diff ? { diff } : {}),
    undo: { table: p.table ?? null, file: file?.undo ?? null, conf: conf?.undo ?? null, live: live ? { before: s.live } : null },
  };
}

/**
 * The nft input that puts the live ruleset (or table) back as it was listed: `flush ruleset` and
 * the old rules; for a table, the delete-and-add of its drop-in with the old listing, or the
 * delete alone when it was not there. One `nft -f`: all of it, or (refused) nothing.
 */
export function restoreInput(t: TableId | null | undefined, before: string | null): string {
  if (!t) return `flush ruleset\n${withNewline(before ?? '')}`;
  const head = tableText(t);
  return `${head}\ndelete ${head}\n${before === null ? '' : withNewline(before)}`;
}

/** Shell: loads the old ruleset (or table) again; the controller's rollback and the watchdog run the same. */
export function restoreLiveScript(t: TableId | null | undefined, before: string | null): string {
  return `${PATH_LINE}\nprintf '%s' ${quote(restoreInput(t, before))} | nft -f /dev/stdin`;
}

async function restoreLive(ctx: StepContext, t: TableId | null, before: string | null): Promise<void> {
  const r = await ctx.exec(restoreLiveScript(t, before));
  if (r.code !== 0) {
    const said = tail(r.stderr) || tail(r.stdout, 5);
    throw new StepError(`loading the previous ${t ? tableText(t) : 'nftables ruleset'} again failed (exit ${r.code})${said ? `: ${said}` : ''}`, { code: r.code, stderr: r.stderr });
  }
}

/**
 * How long the host waits, after loading the new ruleset, for the controller to come back over its
 * own connection before it loads the old one again by itself. A ruleset that cuts the run's own
 * connection (a drop of port 22 with no `ct state established accept` ahead of it) would otherwise
 * leave the host cut off for good: the lockout watchdog of `--confirm` is armed only after the
 * steps, over that very connection. The engine tries a lost link again for a minute, so the host
 * is back in time for it, and the step is then rolled back as any step a lost link interrupted.
 */
export const REVERT_SECONDS = 20;

/** Where the pending revert lives: the step's folder in the run's root-only backups. */
export function revertFiles(ctx: Pick<StepContext, 'backupDir' | 'step'>): { input: string; pending: string; pid: string } {
  const dir = posix.join(ctx.backupDir, backupFolder(ctx.step));
  return { input: `${dir}/nft-revert`, pending: `${dir}/nft-pending`, pid: `${dir}/nft-revert.pid` };
}

/**
 * Shell: arms the host's own revert before the load. The old ruleset's nft input goes to a root-only
 * file, a `pending` mark beside it, and a process in a session of its own (outside the SSH session,
 * without the run's HOSTSMITH_RUN tag, as the watchdog) sleeps, then loads that input unless the
 * mark is gone. Whoever removes the mark first — the controller confirming, or the timer — decides.
 */
export function armRevertScript(ctx: Pick<StepContext, 'backupDir' | 'step'>, t: TableId | null | undefined, before: string | null): string {
  const f = revertFiles(ctx);
  const timer = `sleep ${REVERT_SECONDS}; if rm -- "$1" 2>/dev/null; then nft -f "$2"; fi`;
  return [
    PATH_LINE,
    `${backupDirsScript(ctx, f.input)} || exit 1`,
    `printf '%s' ${quote(restoreInput(t, before))} > ${quote(f.input)} && : > ${quote(f.pending)} || exit 1`,
    `(cd / && exec env -u HOSTSMITH_RUN setsid sh -c ${quote(timer)} hostsmith-nft-revert ${quote(f.pending)} ${quote(f.input)} </dev/null >/dev/null 2>&1) &`,
    `echo $! > ${quote(f.pid)}`,
  ].join('\n');
}

/** Shell: the controller is back: takes the mark and stops the timer (`confirmed`), or finds the host already reverted (`reverted`). */
export function confirmRevertScript(ctx: Pick<StepContext, 'backupDir' | 'step'>): string {
  const f = revertFiles(ctx);
  return [
    `if rm -- ${quote(f.pending)} 2>/dev/null; then`,
    `  pid=$(cat ${quote(f.pid)} 2>/dev/null); if [ -n "$pid" ]; then kill -TERM -"$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null; fi`,
    `  rm -f -- ${quote(f.pid)} ${quote(f.input)}; echo confirmed`,
    'else echo reverted; fi',
  ].join('\n');
}

/**
 * The live load: held to the live ruleset (or table) the plan was made from, the host's own revert
 * armed, `nft -f` of the file, and read back; then a second exec over the same connection confirms
 * that the controller still gets through (see REVERT_SECONDS).
 */
async function loadLive(ctx: StepContext, p: FirewallParams, before: string | null): Promise<string | null> {
  const live = liveScript(p.table);
  const f = revertFiles(ctx);
  const { r, read, failed } = await runOneExec(
    ctx,
    {
      guard: guardScript(`${live}\nhs_nft_live`, Buffer.from(liveAnswer(p.table, before), 'utf8')),
      stages: [
        { name: 'arm', script: armRevertScript(ctx, p.table, before) },
        // nft refusing the file changes nothing live: the revert is disarmed at once.
        { name: 'load', script: `${PATH_LINE}\nnft -f ${quote(fileOf(p))} || { rc=$?; ${confirmRevertScript(ctx)} >/dev/null; exit $rc; }` },
      ],
      read: `${live}\nhs_nft_live`,
    },
    `${whatOf(p.table)} changed after it was read`,
  );
  if (failed && failed.stage === 'arm') {
    throw new StepError(`could not arm the host's own revert in ${posix.dirname(f.input)} (exit ${failed.code}), so ${fileOf(p)} was not loaded${failed.said ? `: ${failed.said}` : ''}`, {
      code: failed.code,
      stderr: r.stderr,
    });
  }
  if (failed && failed.stage !== 'read') {
    const said = failed.said || r.stdout.trim();
    throw new StepError(`loading ${fileOf(p)} with nft -f failed (exit ${failed.code}); the live ruleset is as it was${said ? `: ${said}` : ''}`, { code: failed.code, stderr: r.stderr });
  }
  // A lost link here is the engine's to handle: it reconnects once the host has reverted, and
  // rolls the step back (the live ruleset is then as before, the files are not).
  const confirmed = await ctx.exec(confirmRevertScript(ctx));
  if (confirmed.code !== 0 || confirmed.stdout.trim() !== 'confirmed') {
    throw new StepError(
      confirmed.stdout.trim() === 'reverted'
        ? `the host loaded the old ruleset again by itself: the controller did not get back to it within ${REVERT_SECONDS}s of loading ${fileOf(p)}`
        : `could not confirm the new ruleset on the host (exit ${confirmed.code})${tail(confirmed.stderr) ? `: ${tail(confirmed.stderr)}` : ''}; it loads the old one again by itself within ${REVERT_SECONDS}s`,
    );
  }
  return read === undefined ? before : parseLive(p.table, read);
}

function undoSummary(u: UndoData): string {
  const t = u.table && typeof u.table === 'object' ? (u.table as TableId) : null;
  const live = u.live && typeof u.live === 'object' ? (u.live as { before?: unknown }) : null;
  const parts = [
    live
      ? t && live.before === null
        ? `delete ${tableText(t)} (it was not there)`
        : `load ${t ? tableText(t) : 'the nftables ruleset'} as it was (${String(live.before ?? '').split('\n').length} lines)`
      : '',
    u.file && typeof u.file === 'object' ? pathUndoSummary(u.file as UndoData) : '',
    u.conf && typeof u.conf === 'object' ? pathUndoSummary(u.conf as UndoData) : '',
  ].filter(Boolean);
  return parts.length ? parts.join('; ') : `nothing to put back for ${whatOf(t)}`;
}

function undoMismatch(p: FirewallParams, u: UndoData): string | undefined {
  const t = u.table ?? null;
  const mine = p.table ?? null;
  if (JSON.stringify(t) !== JSON.stringify(mine)) return `its undo data is for ${whatOf(t as TableId | null)}, not ${whatOf(mine)}`;
  if (u.live !== null && u.live !== undefined) {
    const before = typeof u.live === 'object' ? (u.live as { before?: unknown }).before : undefined;
    if (!(before === null || (typeof before === 'string' && !before.includes('\0')))) return 'its undo data holds a live ruleset that is not text';
    if (before === null && !mine) return 'its undo data would delete a table, but the step is for the whole ruleset';
  }
  if (u.file && typeof u.file === 'object') {
    const why = pathUndoMismatch(fileOf(p), u.file as UndoData);
    if (why) return why;
  } else if (u.file !== null && u.file !== undefined) return `its undo data for ${fileOf(p)} is not an object`;
  if (u.conf && typeof u.conf === 'object') {
    if (!mine) return `its undo data changes ${NFT_CONF} as a table's include, but the step is for the whole ruleset`;
    return pathUndoMismatch(NFT_CONF, u.conf as UndoData);
  }
  if (u.conf !== null && u.conf !== undefined) return `its undo data for ${NFT_CONF} is not an object`;
  return undefined;
}

export const firewallStep: StepType<FirewallParams, FirewallState, FirewallUndo> = {
  type: 'firewall',
  schema: firewallSchema,
  async prepare(ctx, p) {
    if (p.src === undefined) return p;
    return { ...p, rendered: await renderSource(ctx, 'firewall', p.src, p.vars) };
  },
  check: checkFirewall,
  guarded: true,
  plan: planFirewall,
  async apply(ctx, p, plan, s) {
    const undo = plan.undo!;
    const state: FirewallState = { ...s };
    const parts: Part[] = [];
    // The include first, then the file, then the live load: newest undone first, so the live
    // ruleset goes back before the files that hold it.
    if (undo.conf) {
      const w = confWanted(s);
      if (!w || !s.conf) throw new StepError(`${NFT_CONF} no longer needs the change that was planned; make a new plan`);
      const was = s.conf;
      parts.push({
        apply: async () => {
          state.conf = (await applyPath(ctx, w, { changed: true, summary: plan.summary, undo: undo.conf }, was)) ?? was;
        },
        rollback: () => rollbackPath(ctx, undo.conf!),
      });
    }
    if (undo.file) {
      const text = fileText(p)!;
      const w: Wanted = { path: fileOf(p), state: 'present', content: Buffer.from(text, 'utf8') };
      parts.push({
        apply: async () => {
          state.file = (await applyPath(ctx, w, { changed: true, summary: plan.summary, undo: undo.file }, s.file)) ?? s.file;
        },
        rollback: () => rollbackPath(ctx, undo.file!),
      });
    }
    if (undo.live) {
      const before = undo.live.before;
      parts.push({
        apply: async () => {
          state.live = await loadLive(ctx, p, before);
        },
        rollback: () => restoreLive(ctx, undo.table, before),
      });
    }
    // A lost link is the engine's: it gets back in (once the host has reverted, when the new
    // ruleset was what cut it off), reads the step again and rolls it back. Putting parts back
    // over the dead link here would only fail and hide that the link was lost.
    let lost: ConnectError | undefined;
    const untilLost = (part: Part): Part => ({
      apply: async () => {
        if (lost) return;
        try {
          await part.apply();
        } catch (e) {
          if (!(e instanceof ConnectError)) throw e;
          lost = e;
        }
      },
      rollback: part.rollback,
    });
    await applyParts(parts.map(untilLost));
    if (lost) throw lost;
    return { state };
  },
  // Newest first (the live ruleset, the file, the include), each tried even when one fails.
  rollback: (ctx, _p, undo) =>
    rollbackParts([
      ...(undo.live ? [() => restoreLive(ctx, undo.table, undo.live!.before)] : []),
      ...(undo.file ? [() => rollbackPath(ctx, undo.file!)] : []),
      ...(undo.conf ? [() => rollbackPath(ctx, undo.conf!)] : []),
    ]),
  hostRollback: (_p, undo) =>
    rollbackPartsScript([
      ...(undo.live ? [restoreLiveScript(undo.table, undo.live.before)] : []),
      ...(undo.file ? [rollbackPathScript(undo.file)] : []),
      ...(undo.conf ? [rollbackPathScript(undo.conf)] : []),
    ]),
  // What is on the host: the live ruleset and the files. The rendering and nft's verdict follow
  // from the params (and are not made from a journaled digest at all).
  stateKey: (_p, s) => ({ live: s.live, file: pathKey(s.file), conf: s.conf ? pathKey(s.conf) : null }),
  footprint: (p) => {
    // The live ruleset is a resource of its own: `nft:*` is all of it, `nft:inet/app` one table.
    const live = p.table ? `nft:${p.table.family}/${p.table.name}` : 'nft:*';
    const writes = [`path:${fileOf(p)}`, ...(p.table ? [`path:${NFT_CONF}`] : []), live];
    // nft must be installed (a package step installing nftables comes first); the whole ruleset
    // may include the drop-ins.
    return { reads: [...writes, 'path:/usr/sbin/nft', ...(p.table ? [] : [`path:${NFT_DIR}`])], writes };
  },
  wrote: (_p, undo) => [...pathWrote(undo?.file ?? null), ...pathWrote(undo?.conf ?? null)],
  undoSummary,
  undoMismatch,
  staticCheck: (raw, env) => sourceProblems(raw, env, 'templates', 'template', raw.vars && typeof raw.vars === 'object' && !Array.isArray(raw.vars) ? Object.keys(raw.vars) : []),
};
