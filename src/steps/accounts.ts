/**
 * What the `user` and `group` steps share: name and number schemas, and putting account entries
 * back exactly.
 *
 * Why not undo with usermod/groupadd: re-adding a user to a group appends it to the member list
 * (order changes), a re-created account gets a new last-change date in /etc/shadow, and a removed
 * password hash would have to travel through the journal. Instead apply copies the account files
 * (passwd, shadow, group, gshadow, subuid, subgid) into the run's root-only backup folder first,
 * and rollback writes back, from that copy, only the entries (lines, by name) the step touches,
 * each at its old position. Other lines stay as they are now, so changes made by others since
 * are kept; when nobody else touched the files they come back byte for byte.
 */
import { z } from 'zod';
import { StepError } from '../errors.js';
import { quote } from '../shell/script.js';
import { backupDirsScript, backupPath } from './backup.js';
import { runOk, tail, type PlanEnv, type StepContext } from './step.js';

export const ACCOUNT_FILES = ['passwd', 'shadow', 'group', 'gshadow', 'subuid', 'subgid'] as const;
export type AccountFile = (typeof ACCOUNT_FILES)[number];

/** Per account file, the names (first field) of the entries a step may change. */
export type Touched = Partial<Record<AccountFile, string[]>>;

export interface AccountUndo {
  /** Folder on the host with the account files as they were just before apply. */
  backup: string;
  touched: Touched;
}

const NAME = /^[a-z_][a-z0-9_.-]*\$?$/;
export const accountName = (what: 'user' | 'group') =>
  z.string().max(32, `a ${what} name has at most 32 characters`).regex(NAME, `invalid ${what} name: use lower-case letters, digits, "_", "-" and ".", starting with a letter or "_"`);

/** A uid/gid: a number, or the string a template rendered to. */
export const idNumber = z.union([z.number().int().min(0).max(4294967294), z.string().regex(/^\d+$/, 'must be a whole number').transform(Number)]);

/** A boolean, or "true"/"false" as a template renders it. */
export const flag = z.union([z.boolean(), z.enum(['true', 'false']).transform((v) => v === 'true')]);

/** A passwd field: no ":" (the separator) and no line break. */
export const passwdField = (what: string) => z.string().refine((v) => !/[:\n]/.test(v), `${what} cannot contain ":" or a line break`);

export function accountBackupDir(env: PlanEnv): string {
  return backupPath(env, 'accounts');
}

export function uniq<T>(xs: T[]): T[] {
  return [...new Set(xs)];
}

/** Copies the account files once per step: a retried apply must not overwrite the first copy. */
export async function backupAccounts(ctx: StepContext, dir: string): Promise<void> {
  await runOk(ctx, backupAccountsScript(ctx, dir), `backing up the account files to ${dir}`);
}

/** Shell: copies the account files into `dir` once (a retried apply keeps the first copy). */
export function backupAccountsScript(ctx: Pick<StepContext, 'backupDir'>, dir: string): string {
  const d = quote(dir);
  return [
    `if [ ! -e ${d}/complete ]; then`,
    `${backupDirsScript(ctx, `${dir}/complete`)} || exit 1`,
    `for f in ${ACCOUNT_FILES.join(' ')}; do if [ -e /etc/$f ]; then cp -p /etc/$f ${d}/$f || exit 1; fi; done`,
    `: > ${d}/complete; fi`,
  ].join('\n');
}

interface Lines {
  lines: string[];
  trailingNewline: boolean;
}

function splitLines(text: string): Lines {
  const lines = text.split('\n');
  const trailingNewline = lines.length > 1 && lines[lines.length - 1] === '';
  if (trailingNewline || text === '') lines.pop();
  return { lines, trailingNewline };
}

const keyOf = (line: string): string => line.split(':', 1)[0]!;

/**
 * The current file with the entries named `keys` put back as they were in `before`: changed
 * entries replaced in place, added ones dropped, removed ones re-inserted after the line that
 * preceded them. Pure, so rollback's exactness is testable without a host.
 */
export function mergeEntries(before: string, current: string, keys: string[]): string {
  const wanted = new Set(keys);
  const b = splitLines(before);
  const c = splitLines(current);
  const old = new Map<string, string[]>();
  for (const l of b.lines) if (wanted.has(keyOf(l))) old.set(keyOf(l), [...(old.get(keyOf(l)) ?? []), l]);

  const out: string[] = [];
  const done = new Set<string>();
  for (const l of c.lines) {
    const k = keyOf(l);
    if (!wanted.has(k)) out.push(l);
    else if (!done.has(k)) {
      done.add(k);
      out.push(...(old.get(k) ?? []));
    }
  }
  b.lines.forEach((l, i) => {
    const k = keyOf(l);
    if (!wanted.has(k) || done.has(k)) return;
    done.add(k);
    let at = 0;
    for (let j = i - 1; j >= 0; j--) {
      const found = out.lastIndexOf(b.lines[j]!);
      if (found >= 0) {
        at = found + 1;
        break;
      }
    }
    out.splice(at, 0, ...old.get(k)!);
  });
  if (!out.length) return '';
  const newline = c.lines.length ? c.trailingNewline : b.trailingNewline;
  return out.join('\n') + (newline ? '\n' : '');
}

/** The names (first field) of the entries of an account file, in order. */
export function entryNames(text: string): string[] {
  return splitLines(text)
    .lines.filter((l) => l !== '')
    .map(keyOf);
}

/** Which fields of a group (3) or gshadow (2: administrators, 3: members) line list user names. */
const MEMBER_FIELDS: Partial<Record<AccountFile, number[]>> = { group: [3], gshadow: [2, 3] };

/**
 * The current group or gshadow file with `users` taken out of the member lists they were not in
 * before (as read from `before`, the same file's earlier copy). Lines of groups that did not exist
 * before, and lists the users were already in, stay as they are; other files are returned unchanged.
 */
export function dropAddedMembers(file: AccountFile, before: string, current: string, users: string[]): string {
  const fields = MEMBER_FIELDS[file];
  if (!fields || !users.length) return current;
  const gone = new Set(users);
  const old = new Map<string, string[]>();
  for (const l of splitLines(before).lines) if (!old.has(keyOf(l))) old.set(keyOf(l), l.split(':'));
  const c = splitLines(current);
  const lines = c.lines.map((l) => {
    const was = old.get(keyOf(l));
    if (!was) return l;
    const f = l.split(':');
    let changed = false;
    for (const i of fields) {
      if (f[i] === undefined || f[i] === '') continue;
      const had = new Set((was[i] ?? '').split(','));
      const kept = f[i]!.split(',').filter((m) => !gone.has(m) || had.has(m));
      if (kept.length !== f[i]!.split(',').length) {
        f[i] = kept.join(',');
        changed = true;
      }
    }
    return changed ? f.join(':') : l;
  });
  if (!lines.length) return current;
  return lines.join('\n') + (c.trailingNewline ? '\n' : '');
}

/**
 * Puts the touched entries back from the backup; retries when a tool edits the files meanwhile.
 * `dropMembers`: users also taken out of the group member lists they joined since the backup.
 */
export async function restoreAccounts(ctx: StepContext, undo: AccountUndo, o: { dropMembers?: string[] } = {}): Promise<void> {
  // The one rollback of account entries: the lockout watchdog runs this same script. It merges each
  // file under the file's lock, so a tool editing it meanwhile waits for it rather than racing it.
  await runOk(
    ctx,
    restoreAccountsScript(undo, o),
    `restoring the entries of ${Object.keys(undo.touched)
      .map((f) => `/etc/${f}`)
      .join(', ')} on ${ctx.host}`,
  );
}

/**
 * mergeEntries then dropAddedMembers, in POSIX awk, for the host-side rollback (the lockout
 * watchdog runs with no controller). Arguments: the copy from before, then the current file (or
 * /dev/null); -v keys, drop (space-separated names), mf (member fields, 1-based), nlb/nlc (does
 * each file end with a newline). Bytes pass through as they are (LC_ALL=C).
 */
export const MERGE_AWK = String.raw`BEGIN { FS = ":"; n = split(keys, ka, " "); for (i = 1; i <= n; i++) want[ka[i]] = 1
  nd = split(drop, da, " "); for (i = 1; i <= nd; i++) gone[da[i]] = 1; nm = split(mf, ma, " ") }
FILENAME == ARGV[1] { nb++; b[nb] = $0; k = key($0); if (k in want) { oc[k]++; old[k, oc[k]] = $0 }; if (!(k in first)) first[k] = $0; next }
{ nc++; c[nc] = $0 }
function key(l,   i) { i = index(l, ":"); return i ? substr(l, 1, i - 1) : l }
function put(at, l,   j) { for (j = no; j >= at; j--) o[j + 1] = o[j]; o[at] = l; no++ }
END {
  for (i = 1; i <= nc; i++) { k = key(c[i]); if (!(k in want)) o[++no] = c[i]; else if (!(k in done)) { done[k] = 1; for (j = 1; j <= oc[k]; j++) o[++no] = old[k, j] } }
  for (i = 1; i <= nb; i++) {
    k = key(b[i]); if (!(k in want) || (k in done)) continue; done[k] = 1; at = 1
    for (j = i - 1; j >= 1 && at == 1; j--) for (x = no; x >= 1; x--) if (o[x] == b[j]) { at = x + 1; break }
    for (j = 1; j <= oc[k]; j++) put(at + j - 1, old[k, j])
  }
  if (nd && nm) for (i = 1; i <= no; i++) {
    k = key(o[i]); if (!(k in first)) continue; nf = split(o[i], f, ":"); split(first[k], w, ":"); ch = 0
    for (m = 1; m <= nm; m++) { fi = ma[m] + 0; if (fi > nf || f[fi] == "") continue
      split(w[fi], hl, ","); delete had; for (x in hl) had[hl[x]] = 1
      cnt = split(f[fi], mem, ","); s = ""; kept = 0
      for (x = 1; x <= cnt; x++) if (!(mem[x] in gone) || (mem[x] in had)) { s = kept++ ? s "," mem[x] : mem[x] }
      if (kept != cnt) { f[fi] = s; ch = 1 } }
    if (ch) { s = f[1]; for (x = 2; x <= nf; x++) s = s ":" f[x]; o[i] = s }
  }
  if (!no) exit
  nl = nc ? nlc : nlb
  for (i = 1; i <= no; i++) printf "%s%s", o[i], (i < no || nl ? "\n" : "")
}`;

/**
 * restoreAccounts as one host script (root, no controller): each touched file merged by
 * MERGE_AWK under the shadow tools' lock and renamed into place, unchanged files left alone.
 */
export function restoreAccountsScript(undo: AccountUndo, o: { dropMembers?: string[] } = {}): string {
  const members = o.dropMembers ?? [];
  const b = quote(undo.backup);
  const lines = [
    'export LC_ALL=C',
    `[ -e ${b}/complete ] || { echo ${quote(`the backup of the account files (${undo.backup}) is missing`)} >&2; exit 1; }`,
    `awkp=${quote(MERGE_AWK)}`,
    'nl() { [ -s "$1" ] && [ -z "$(tail -c1 "$1")" ] && echo 1 || echo 0; }',
    `lock() { for t in 1 2 3 4 5 6 7 8 9 10; do printf %s $$ > "$1.$$" && ln "$1.$$" "$1.lock" 2>/dev/null && { rm -f -- "$1.$$"; return 0; }; rm -f -- "$1.$$"; sleep 1; done; echo "$1 is locked by another program ($1.lock exists)" >&2; return 1; }`,
    `merge() { f=/etc/$1; s=${b}/$1; [ -e "$f" ] || [ -n "$2" ] || return 0; bs=/dev/null; [ -e "$s" ] && bs=$s; cs=/dev/null; [ -e "$f" ] && cs=$f; ref=$f; [ -e "$f" ] || ref=$s
  lock "$f" || return 1; t="$f.hostsmith-new"
  awk -v keys="$2" -v drop="$3" -v mf="$4" -v nlb="$(nl "$bs")" -v nlc="$(nl "$cs")" "$awkp" "$bs" "$cs" > "$t" || { rm -f -- "$t" "$f.lock"; return 1; }
  if { [ -e "$f" ] && cmp -s "$t" "$f"; } || { [ ! -e "$f" ] && [ ! -s "$t" ]; }; then rm -f -- "$t"; else chmod --reference="$ref" "$t" && chown --reference="$ref" "$t" && mv -f -- "$t" "$f" || { rm -f -- "$t" "$f.lock"; return 1; }; fi
  rm -f -- "$f.lock"; }`,
  ];
  for (const f of ACCOUNT_FILES) {
    const keys = undo.touched[f] ?? [];
    const fields = MEMBER_FIELDS[f];
    const strip = fields ? members : [];
    if (!keys.length && !strip.length) continue;
    lines.push(`merge ${f} ${quote(keys.join(' '))} ${quote(strip.join(' '))} ${quote((fields ?? []).map((i) => i + 1).join(' '))} || exit 1`);
  }
  return lines.join('\n');
}

/** Why a one-exec account change (group.ts, user.ts) failed: its backup, or the command itself. */
export function accountChangeError(failed: { stage: string; code: number; said: string }, stdout: string, stderr: string, backup: string | undefined, cmd: string): StepError {
  const what = failed.stage === 'backup' ? `backing up the account files to ${backup}` : cmd.split(' ')[0]!;
  const said = tail(failed.said) || tail(stdout, 5);
  return new StepError(`${what} failed (exit ${failed.code})${said ? `: ${said}` : ''}`, { code: failed.code, stderr });
}

/**
 * useradd, usermod, groupadd… rewrite the account files and a mail spool whatever entry they
 * change: a change to one account writes those, beside the entries it names.
 */
export const ACCOUNT_WRITES = [...ACCOUNT_FILES.map((f) => `path:/etc/${f}`), 'path:/var/mail'];

/** The entries a change touched, from its undo data: the users and groups it really changed. */
export function touchedItems(undo: AccountUndo | undefined | null): string[] {
  const t = undo?.touched ?? {};
  return [...(t.passwd ?? []).map((n) => `user:${n}`), ...(t.group ?? []).map((n) => `group:${n}`)];
}

/** A handler on an account is not needed once the account is gone. */
export async function accountGone(ctx: StepContext, what: 'user' | 'group', name: string): Promise<string | null> {
  const r = await ctx.exec(`getent ${what === 'user' ? 'passwd' : 'group'} ${quote(name)} >/dev/null`);
  return r.code === 0 ? null : `${what} ${name} no longer exists`;
}
