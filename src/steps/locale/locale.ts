/**
 * `locale`: a locale generated on a Debian host, as locale-gen makes it, and (default: true) the
 * system's LANG in /etc/default/locale, as update-locale writes it.
 *
 * Three things change, each put back exactly on rollback:
 * - /etc/locale.gen, the list locale-gen rebuilds from (the locales package runs it again on
 *   every upgrade): the locale's line is uncommented, or added. Through file-state.ts.
 * - /usr/lib/locale/locale-archive, where the compiled locales live. localedef edits that file in
 *   place, through a mapping, so neither a hard link nor a diff of it can serve as a backup: the
 *   old bytes are copied into the run's root-only backup folder (a few MB for a handful of locales;
 *   the folder lives as long as the run can be undone, and `prune` frees it), and rollback copies
 *   them back, or removes an archive that was not there. The new locale is compiled into a copy of
 *   that backup (`localedef --prefix`, in the same root-only folder) and the result is renamed over
 *   the archive with the safe-path writer: localedef itself never writes in /usr/lib/locale, so it
 *   cannot be led through a planted link, and the live archive is always whole, old or new.
 * - /etc/default/locale (default: true only): its LANG line set, others left as they are.
 *
 * Only the one locale is compiled, with the arguments locale-gen would give localedef for its
 * line: running locale-gen itself would rebuild every listed locale, which is slow and rewrites
 * the others' bytes.
 */
import { z } from 'zod';
import { StepError } from '../../errors.js';
import { guardScript, runOneExec } from '../../shell/one-exec.js';
import { quote } from '../../shell/script.js';
import { enterScript, unsafeParentsScript, withSafePath } from '../../shell/safe-path.js';
import { flag } from '../accounts.js';
import { backupDirsScript, backupFailure, backupPath, copyToBackupScript } from '../backup.js';
import {
  applyPath,
  checkPath,
  checkScript as pathCheckScript,
  missingParents,
  pathKey,
  pathUndoSummary,
  pathWrote,
  planPath,
  rollbackPath,
  rollbackPathScript,
  type FileUndo,
  type PathState,
} from '../file-state.js';
import { applyParts, partsUndoMismatch, readAnswer, rollbackParts, rollbackPartsScript, splitAnswer, textOf, type Part } from '../path-parts.js';
import { tail, type Plan, type PlanEnv, type StepContext, type StepType } from '../step.js';
import { str, type UndoData } from '../undo-text.js';

export const LOCALE_GEN = '/etc/locale.gen';
export const DEFAULT_LOCALE = '/etc/default/locale';
export const ARCHIVE = '/usr/lib/locale/locale-archive';
export const SUPPORTED = '/usr/share/i18n/SUPPORTED';
/** Where a host's own locales are listed (locale.gen's header points there). */
export const LOCAL_SUPPORTED = '/usr/local/share/i18n/SUPPORTED';
const ALIAS_FILE = '/usr/share/locale/locale.alias';

/** language[_territory][.codeset][@modifier], as SUPPORTED spells them: no "/", blank or quote. */
const LOCALE_NAME = /^[A-Za-z][A-Za-z0-9_+-]*(\.[A-Za-z0-9_+-]+)?(@[A-Za-z0-9_+-]+)?$/;

export const localeSchema = z
  .object({
    name: z.string().regex(LOCALE_NAME, 'a locale name such as en_US.UTF-8 or de_DE@euro (language_TERRITORY.codeset@modifier, as /usr/share/i18n/SUPPORTED lists them)'),
    /** Also make it the system's LANG in /etc/default/locale. */
    default: flag.default(false),
  })
  .strict();

export type LocaleParams = z.output<typeof localeSchema>;

/** The archive's state without its bytes (it is megabytes): its digest stands for them. */
export interface ArchiveState {
  kind: 'absent' | 'file' | 'link' | 'other';
  mode?: number;
  owner?: string;
  group?: string;
  sha256?: string;
  /** Folders above it that do not exist, outermost first. */
  missing: string[];
}

export interface LocaleState {
  /** The charset SUPPORTED gives the name (locale.gen's second field, localedef's -f). */
  charset: string;
  /** What `locale -a` lists. */
  listed: string[];
  archive: ArchiveState;
  localeGen: PathState;
  /** Read only with default: true. */
  defaults?: PathState;
}

export interface LocaleUndo {
  /** The locale the step made (checked against the step's params by undoMismatch). */
  name: string;
  localeGen: FileUndo | null;
  archive: FileUndo | null;
  defaults: FileUndo | null;
}

/**
 * The name as glibc files it: the codeset lowercased, with everything but letters and digits
 * dropped ("iso" put before one of digits only), so en_US.UTF-8 is `locale -a`'s en_US.utf8.
 */
export function normaliseLocale(name: string): string {
  const at = name.indexOf('@');
  const mod = at < 0 ? '' : name.slice(at);
  const head = at < 0 ? name : name.slice(0, at);
  const dot = head.indexOf('.');
  if (dot < 0) return name;
  const code = head
    .slice(dot + 1)
    .replace(/[^A-Za-z0-9]/g, '')
    .toLowerCase();
  return `${head.slice(0, dot)}.${/^[0-9]+$/.test(code) ? `iso${code}` : code}${mod}`;
}

/** Is the locale among what `locale -a` lists (in either spelling)? */
export const isListed = (name: string, listed: readonly string[]): boolean => listed.some((l) => normaliseLocale(l) === normaliseLocale(name));

/** What the archive's check prints: kind, mode, owner, group, missing folders, sha256, each NUL-terminated. */
export function archiveCheckScript(): string {
  return [
    unsafeParentsScript(ARCHIVE),
    `a=${quote(ARCHIVE)}`,
    'n=0; d=${a%/*}',
    'while [ -n "$d" ] && [ ! -e "$d" ] && [ ! -L "$d" ]; do n=$((n+1)); d=${d%/*}; done',
    `if [ -L "$a" ]; then printf 'link\\0\\0\\0\\0%s\\0\\0' "$n"`,
    `elif [ -f "$a" ]; then stat --printf 'file\\0%a\\0%U\\0%G\\0' -- "$a" || exit 1; printf '%s\\0' "$n"; h=$(sha256sum < "$a") || exit 1; printf '%s\\0' "\${h%% *}"`,
    `elif [ -e "$a" ]; then printf 'other\\0\\0\\0\\0%s\\0\\0' "$n"`,
    `else printf 'absent\\0\\0\\0\\0%s\\0\\0' "$n"; fi`,
  ].join('\n');
}

const ARCHIVE_FIELDS = 6;

export function parseArchive(fields: string[]): ArchiveState {
  const [kind, mode, owner, group, missing, sha256] = fields as [string, string, string, string, string, string];
  if (!['absent', 'file', 'link', 'other'].includes(kind) || !/^\d+$/.test(missing)) throw new StepError(`cannot read ${ARCHIVE}: unexpected answer from the host (${JSON.stringify(kind)})`);
  const s: ArchiveState = { kind: kind as ArchiveState['kind'], missing: missingParents(ARCHIVE, Number(missing)) };
  if (kind === 'file') Object.assign(s, { mode: parseInt(mode, 8), owner, group, sha256 });
  return s;
}

/** The archive's answer as the host printed it: what the apply holds the archive to. */
const archiveAnswer = (fields: string[]) => Buffer.from(fields.map((f) => `${f}\0`).join(''), 'utf8');
const archiveAnswers = new WeakMap<ArchiveState, Buffer>();

/**
 * One round trip: how SUPPORTED knows the name (supported + its charset; unknown + every name, for
 * a suggestion; nolocales), what `locale -a` lists, the archive, then /etc/locale.gen.
 */
export function checkScript(p: Pick<LocaleParams, 'name'>): string {
  return [
    `s=${quote(SUPPORTED)}; u=${quote(LOCAL_SUPPORTED)}`,
    `if [ ! -f "$s" ]; then printf 'nolocales\\0\\0'`,
    'else',
    '  if [ -f "$u" ]; then set -- "$s" "$u"; else set -- "$s"; fi',
    `  c=$(awk -v n=${quote(p.name)} '$1 == n && NF >= 2 { print $2; exit }' "$@") || exit 1`,
    `  if [ -n "$c" ]; then printf 'supported\\0%s\\0' "$c"; else printf 'unknown\\0'; awk '$1 !~ /^#/ && NF >= 2 { printf "%s ", $1 }' "$@"; printf '\\0'; fi`,
    'fi',
    `printf '%s\\0' "$(locale -a 2>/dev/null)"`,
    archiveCheckScript(),
    pathCheckScript(LOCALE_GEN),
  ].join('\n');
}

export function parseLocaleCheck(raw: Buffer, p: LocaleParams): Omit<LocaleState, 'defaults'> {
  const { fields, state } = splitAnswer(raw, 3 + ARCHIVE_FIELDS, LOCALE_GEN, `the locale ${p.name}`);
  const [how, charset, listed] = fields as [string, string, string];
  supportedThere(p.name, how, charset);
  const archiveFields = fields.slice(3);
  const archive = parseArchive(archiveFields);
  archiveAnswers.set(archive, archiveAnswer(archiveFields));
  return { charset, listed: listed.split('\n').filter(Boolean), archive, localeGen: state };
}

/** Throws the step's error for a name SUPPORTED does not list, or a host without the locales package. */
export function supportedThere(name: string, how: string, said: string): void {
  if (how === 'supported') return;
  if (how === 'nolocales') throw new StepError(`the locales package is not installed on this host (${SUPPORTED} does not exist): add a package step for locales before this step`);
  throw new StepError(`no locale ${name} in ${SUPPORTED}${closeNames(name, said.split(' ').filter(Boolean))}: give a name as that file lists it (its first field), such as en_US.UTF-8`);
}

/**
 * What to suggest for a name SUPPORTED lacks: the same locale spelled as the file has it (en_US.utf8
 * for en_US.UTF-8), else up to four names a couple of edits away, else the names of its language.
 */
export function closeNames(name: string, names: readonly string[]): string {
  const same = names.find((n) => normaliseLocale(n).toLowerCase() === normaliseLocale(name).toLowerCase());
  if (same) return ` (did you mean "${same}"?)`;
  const near = names
    .map((n) => ({ n, d: editDistance(name.toLowerCase(), n.toLowerCase()) }))
    .filter((x) => x.d <= 2)
    .sort((a, b) => a.d - b.d || a.n.localeCompare(b.n))
    .slice(0, 4)
    .map((x) => x.n);
  if (near.length) return ` (close names: ${near.join(', ')})`;
  const lang = name.split(/[_.@]/)[0]!.toLowerCase();
  const kin = names.filter((n) => n.toLowerCase().startsWith(`${lang}_`));
  return kin.length ? ` (names for ${lang}: ${kin.slice(0, 8).join(', ')}${kin.length > 8 ? ', …' : ''})` : '';
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}

async function checkLocale(ctx: StepContext, p: LocaleParams): Promise<LocaleState> {
  const s: LocaleState = parseLocaleCheck(await readAnswer(ctx, checkScript(p), `the locale ${p.name}`), p);
  if (p.default) s.defaults = await checkPath(ctx, DEFAULT_LOCALE);
  return s;
}

/**
 * /etc/locale.gen with the locale's line active: a commented "# name charset" line (as the locales
 * package ships every supported one) is uncommented in place, else the line is added at the end.
 * Returns the text given (the same string) when an active line is there already.
 */
export function editLocaleGen(text: string | null, name: string, charset: string): { text: string; what: string } {
  const line = `${name} ${charset}`;
  if (text === null) return { text: `${line}\n`, what: `create ${LOCALE_GEN} with "${line}"` };
  const lines = text.split('\n');
  const fields = (l: string) => l.trim().split(/\s+/);
  const active = lines.findIndex((l) => !l.trim().startsWith('#') && fields(l)[0] === name && fields(l)[1] === charset);
  if (active >= 0) return { text, what: `${LOCALE_GEN} lists "${line}"` };
  const commented = lines.findIndex((l) => {
    const m = /^\s*#\s*(\S+)\s+(\S+)\s*$/.exec(l);
    return m !== null && m[1] === name && m[2] === charset;
  });
  if (commented >= 0) {
    lines[commented] = lines[commented]!.replace(/^\s*#\s*/, '');
    return { text: lines.join('\n'), what: `${LOCALE_GEN}: uncomment "${line}" (line ${commented + 1})` };
  }
  const body = text === '' || text.endsWith('\n') ? text : `${text}\n`;
  return { text: `${body}${line}\n`, what: `${LOCALE_GEN}: add "${line}"` };
}

const LANG_LINE = /^\s*LANG=(.*)$/;
const unquoted = (v: string) =>
  v
    .trim()
    .replace(/^"(.*)"$/, '$1')
    .replace(/^'(.*)'$/, '$1');

/** The LANG /etc/default/locale sets (the last line wins, as pam_env reads it); undefined when none. */
export function defaultLang(text: string | null): string | undefined {
  let lang: string | undefined;
  for (const l of (text ?? '').split('\n')) {
    const m = LANG_LINE.exec(l.replace(/\r$/, ''));
    if (m) lang = unquoted(m[1]!);
  }
  return lang;
}

/**
 * /etc/default/locale with LANG=name, as update-locale leaves it: the first LANG line rewritten
 * and any later one dropped (the last would win), else the line added; every other line kept.
 * Returns the text given when LANG already names the locale (in either spelling).
 */
export function editDefault(text: string | null, name: string): { text: string; what: string } {
  const was = defaultLang(text);
  if (was !== undefined && normaliseLocale(was) === normaliseLocale(name)) return { text: text!, what: `LANG is ${was}` };
  if (text === null) return { text: `LANG=${name}\n`, what: `create ${DEFAULT_LOCALE} with LANG=${name}` };
  const out: string[] = [];
  let placed = false;
  for (const l of text.split('\n')) {
    if (!LANG_LINE.test(l.replace(/\r$/, ''))) out.push(l);
    else if (!placed) {
      out.push(`LANG=${name}${l.endsWith('\r') ? '\r' : ''}`);
      placed = true;
    }
  }
  if (!placed) {
    const body = text === '' || text.endsWith('\n') ? text : `${text}\n`;
    return { text: `${body}LANG=${name}\n`, what: `${DEFAULT_LOCALE}: add LANG=${name}` };
  }
  return { text: out.join('\n'), what: `${DEFAULT_LOCALE}: LANG ${was} → ${name}` };
}

interface FilePart {
  content: Buffer;
  plan: Plan<FileUndo>;
  what: string;
}

function localeGenPart(p: LocaleParams, s: LocaleState, env: PlanEnv): FilePart | null {
  if (isListed(p.name, s.listed)) return null;
  const old = textOf(LOCALE_GEN, s.localeGen);
  const { text, what } = editLocaleGen(old, p.name, s.charset);
  // Listed but not compiled (locale-gen not run since): the archive part alone.
  if (text === old) return null;
  const content = Buffer.from(text, 'utf8');
  return { content, plan: planPath({ path: LOCALE_GEN, state: 'present', content }, s.localeGen, env), what };
}

function archiveUndo(p: LocaleParams, s: LocaleState, env: PlanEnv): FileUndo | null {
  if (isListed(p.name, s.listed)) return null;
  const a = s.archive;
  if (a.kind === 'link' || a.kind === 'other')
    throw new StepError(`${ARCHIVE} is ${a.kind === 'link' ? 'a symbolic link' : 'not a regular file'}; hostsmith does not write through it: make it a regular file (or remove it) first`);
  if (a.kind === 'absent') return { kind: 'absent', path: ARCHIVE, created: a.missing };
  return { kind: 'file', path: ARCHIVE, mode: a.mode, owner: a.owner, group: a.group, backup: backupPath(env, ARCHIVE) };
}

function defaultPart(p: LocaleParams, s: LocaleState, env: PlanEnv): FilePart | null {
  if (!p.default || !s.defaults) return null;
  const old = textOf(DEFAULT_LOCALE, s.defaults);
  const { text, what } = editDefault(old, p.name);
  if (text === old) return null;
  const content = Buffer.from(text, 'utf8');
  return { content, plan: planPath({ path: DEFAULT_LOCALE, state: 'present', content }, s.defaults, env), what };
}

export function planLocale(p: LocaleParams, s: LocaleState, env: PlanEnv): Plan<LocaleUndo> {
  const gen = localeGenPart(p, s, env);
  const archive = archiveUndo(p, s, env);
  const def = defaultPart(p, s, env);
  const lang = p.default && s.defaults ? `; ${DEFAULT_LOCALE}: LANG=${defaultLang(textOf(DEFAULT_LOCALE, s.defaults)) ?? '(unset)'}` : '';
  if (!gen && !archive && !def) return { changed: false, summary: `locale ${p.name} is generated (locale -a lists it)${lang}`, undo: null };
  const whats = [gen?.what, archive ? `compile it into ${ARCHIVE}${archive.kind === 'absent' ? ' (created)' : ' (its old bytes backed up)'}` : undefined, def?.what].filter(Boolean);
  const diff = [gen?.plan.diff, def?.plan.diff].filter(Boolean).join('');
  const verb = archive ? `generate locale ${p.name} (${s.charset})` : `make ${p.name} the default locale`;
  return {
    changed: true,
    summary: `${verb}: ${whats.join('; ')}`,
    ...(diff ? { diff } : {}),
    undo: { name: p.name, localeGen: gen?.plan.undo ?? null, archive, defaults: def?.plan.undo ?? null },
  };
}

/** The root-only folder the new archive is built in, beside the step's backups. */
const buildDir = (env: PlanEnv) => backupPath(env, '/.locale-build');

/**
 * Shell: compiles the locale into a copy of the old archive (its backup) in `dir`, with the input
 * locale-gen would pick for the line, and checks it is in the result. localedef exits 1 for mere
 * warnings under -c, which locale-gen ignores; the list read back is what decides.
 */
export function compileScript(p: LocaleParams, charset: string, dir: string, from: string | undefined): string {
  const w = quote(dir);
  const base = p.name.replace(/[.@].*$/, '');
  const at = p.name.includes('@') ? p.name.slice(p.name.indexOf('@')) : '';
  const input = `${base}${at}`;
  return [
    `w=${w}`,
    `rm -rf -- "$w" && mkdir -p -- "$w/usr/lib/locale" || exit 1`,
    ...(from ? [`cp -- ${quote(from)} "$w/usr/lib/locale/locale-archive" || exit 1`] : []),
    `if [ -e ${quote(`/usr/local/share/i18n/locales/${p.name}`)} ]; then i=${quote(`/usr/local/share/i18n/locales/${p.name}`)}`,
    `elif [ -e ${quote(`/usr/share/i18n/locales/${p.name}`)} ]; then i=${quote(p.name)}`,
    `elif [ -e ${quote(`/usr/local/share/i18n/locales/${input}`)} ]; then i=${quote(`/usr/local/share/i18n/locales/${input}`)}`,
    `else i=${quote(input)}; fi`,
    `localedef --prefix="$w" -i "$i" -c -f ${quote(charset)} -A ${ALIAS_FILE} ${quote(p.name)}; rc=$?`,
    `if ! localedef --prefix="$w" --list-archive | grep -qxF -e ${quote(p.name)} -e ${quote(normaliseLocale(p.name))}; then`,
    `  printf '%s\\n' ${quote(`localedef did not add ${p.name} to the archive`)}" (exit $rc)" >&2; rm -rf -- "$w"; exit 1`,
    'fi',
  ].join('\n');
}

/** Shell: the built archive renamed over the live one, from inside /usr/lib/locale entered safely (safe-path.ts). */
function installScript(dir: string, make: boolean): string {
  const w = quote(dir);
  return withSafePath(
    [
      enterScript('/usr/lib/locale', { make }),
      `if [ -L locale-archive ]; then hs_refuse ${ARCHIVE} "it is a symbolic link; hostsmith does not write through it"; exit $?; fi`,
      `hs_write locale-archive '' '' < ${w}/usr/lib/locale/locale-archive || exit 1`,
      // The archive is in place: a build folder left behind is no reason to fail.
      `rm -rf -- ${w} || true`,
    ].join('\n'),
  );
}

/**
 * Makes the archive part: held to the archive as planned, the locale compiled aside and renamed
 * into place, then read back (`locale -a` must list it). A failure leaves the live archive as it
 * was: only the rename touches it.
 */
async function applyArchive(ctx: StepContext, p: LocaleParams, s: LocaleState, undo: FileUndo): Promise<ArchiveState> {
  const env = { runId: ctx.runId, step: ctx.step, backupDir: ctx.backupDir };
  const dir = buildDir(env);
  const raw = archiveAnswers.get(s.archive);
  const from = undo.kind === 'file' ? undo.backup : undefined;
  const { r, read, failed } = await runOneExec(
    ctx,
    {
      ...(raw ? { guard: guardScript(archiveCheckScript(), raw) } : {}),
      stages: [
        { name: 'compile', script: `${backupDirsScript(ctx, `${dir}/x`)} || exit 1\n${compileScript(p, s.charset, dir, from)}` },
        { name: 'install', script: installScript(dir, undo.kind === 'absent' && undo.created.length > 0) },
      ],
      read: `printf '%s\\0' "$(locale -a 2>/dev/null)"\n${archiveCheckScript()}`,
    },
    `someone changed ${ARCHIVE} after it was read`,
  );
  // Past the install the live archive is the new one: a failure from there on puts the old one
  // back here, since the engine rolls back completed steps (and applyParts completed parts) only.
  const undone = async (e: StepError): Promise<never> => {
    try {
      await rollbackPath(ctx, undo);
    } catch (r) {
      throw new StepError(`${e.message}; putting ${ARCHIVE} back also failed: ${(r as Error).message}`, { cause: e });
    }
    throw e;
  };
  if (failed?.stage === 'read') return undone(new StepError(`${ARCHIVE} was replaced but could not be read back (exit ${failed.code}): ${tail(failed.said)}`));
  if (failed) {
    const said = tail(failed.said) || tail(r.stdout, 5);
    if (/No space left on device/i.test(failed.said)) throw backupFailure(ctx, { ...r, code: failed.code, stderr: failed.said }, `compiling ${p.name}`, '/var/lib/hostsmith and /usr/lib/locale');
    throw new StepError(`${failed.stage === 'install' ? `putting the new ${ARCHIVE} in place` : `compiling locale ${p.name} with localedef`} failed (exit ${failed.code})${said ? `: ${said}` : ''}`, {
      code: failed.code,
      stderr: failed.said,
    });
  }
  const out = Buffer.from(read ?? '', 'utf8');
  const end = out.indexOf(0);
  const listed = end < 0 ? [] : out.subarray(0, end).toString('utf8').split('\n').filter(Boolean);
  if (!isListed(p.name, listed)) return undone(new StepError(`${ARCHIVE} was replaced, but locale -a does not list ${p.name} (it lists ${listed.join(', ') || 'nothing'})`));
  const { fields } = splitFields(out.subarray(end + 1), ARCHIVE_FIELDS);
  return parseArchive(fields);
}

function splitFields(raw: Buffer, n: number): { fields: string[] } {
  const fields: string[] = [];
  let at = 0;
  for (let i = 0; i < n; i++) {
    const end = raw.indexOf(0, at);
    if (end < 0) throw new StepError(`cannot read ${ARCHIVE} back: the host's answer was cut short`);
    fields.push(raw.subarray(at, end).toString('utf8'));
    at = end + 1;
  }
  return { fields };
}

/**
 * Every backup the step's change needs, made before anything changes: a run killed between two
 * parts is rolled back (recover) from backups that are all there.
 */
async function makeBackups(ctx: StepContext, s: LocaleState, undo: LocaleUndo): Promise<void> {
  const stages = [undo.archive, undo.localeGen, undo.defaults]
    .filter((u): u is FileUndo & { backup: string } => u !== null && u.kind !== 'absent' && u.backup !== undefined)
    .map((u, i) => ({ name: `backup${i}`, script: copyToBackupScript(ctx, u.path, u.backup) }));
  if (!stages.length) return;
  const raw = archiveAnswers.get(s.archive);
  const { r, failed } = await runOneExec(ctx, { ...(raw ? { guard: guardScript(archiveCheckScript(), raw) } : {}), stages }, `someone changed ${ARCHIVE} after it was read`);
  if (failed) throw backupFailure(ctx, { ...r, code: failed.code, stderr: failed.said }, 'backing up what the locale step changes', '/var/lib/hostsmith');
}

function undoSummary(u: UndoData): string {
  const parts = [u.defaults, u.archive, u.localeGen].filter((x) => x && typeof x === 'object').map((x) => pathUndoSummary(x as UndoData));
  return parts.length ? parts.join('; ') : `nothing to put back for locale ${str(u, 'name') ?? '?'}`;
}

function undoMismatch(p: LocaleParams, u: UndoData): string | undefined {
  if (u.name !== p.name) return `its undo data is for locale ${JSON.stringify(u.name)}, not ${p.name}`;
  if (u.defaults && !p.default) return `its undo data changes ${DEFAULT_LOCALE}, which a step without default: true does not touch`;
  return partsUndoMismatch(u, [
    ['localeGen', LOCALE_GEN],
    ['archive', ARCHIVE],
    ['defaults', DEFAULT_LOCALE],
  ]);
}

/** Rollback's parts, newest change first. */
const undoParts = (undo: LocaleUndo): FileUndo[] => [undo.defaults, undo.archive, undo.localeGen].filter((u): u is FileUndo => u !== null);

export const localeStep: StepType<LocaleParams, LocaleState, LocaleUndo> = {
  type: 'locale',
  schema: localeSchema,
  check: checkLocale,
  guarded: true,
  plan: planLocale,
  async apply(ctx, p, plan, s) {
    const undo = plan.undo!;
    const env = { runId: ctx.runId, step: ctx.step, backupDir: ctx.backupDir };
    const state: LocaleState = { ...s };
    await makeBackups(ctx, s, undo);
    // The same parts as planned (the engine held the state to the plan's), with the plan's own
    // undo data: its backup paths are the ones journaled.
    const filePart = (made: FilePart | null, u: FileUndo, path: string, was: PathState, keep: (now: PathState) => void): Part => {
      if (!made) throw new StepError(`${path} no longer needs the change that was planned; make a new plan`);
      return {
        apply: async () => keep((await applyPath(ctx, { path, state: 'present', content: made.content }, { changed: true, summary: plan.summary, undo: u }, was)) ?? was),
        rollback: () => rollbackPath(ctx, u),
      };
    };
    const parts: Part[] = [];
    if (undo.localeGen)
      parts.push(
        filePart(localeGenPart(p, s, env), undo.localeGen, LOCALE_GEN, s.localeGen, (now) => {
          state.localeGen = now;
        }),
      );
    if (undo.archive) {
      const u = undo.archive;
      parts.push({
        apply: async () => {
          state.archive = await applyArchive(ctx, p, s, u);
          state.listed = [...s.listed, normaliseLocale(p.name)];
        },
        rollback: () => rollbackPath(ctx, u),
      });
    }
    if (undo.defaults && s.defaults)
      parts.push(
        filePart(defaultPart(p, s, env), undo.defaults, DEFAULT_LOCALE, s.defaults, (now) => {
          state.defaults = now;
        }),
      );
    await applyParts(parts);
    return { state };
  },
  // Newest first, each tried even if another fails.
  rollback: (ctx, _p, undo) => rollbackParts(undoParts(undo).map((u) => () => rollbackPath(ctx, u))),
  hostRollback: (_p, undo) => rollbackPartsScript(undoParts(undo).map(rollbackPathScript)),
  stateKey: (p, s) => ({
    charset: s.charset,
    listed: isListed(p.name, s.listed),
    archive: { kind: s.archive.kind, mode: s.archive.mode, owner: s.archive.owner, group: s.archive.group, sha256: s.archive.sha256 },
    localeGen: pathKey(s.localeGen),
    defaults: s.defaults ? pathKey(s.defaults) : null,
  }),
  footprint: (p) => {
    const writes = [`path:${LOCALE_GEN}`, `path:${ARCHIVE}`, ...(p.default ? [`path:${DEFAULT_LOCALE}`] : [])];
    // SUPPORTED and the locale sources come with the locales package; `locale -a` reads all of /usr/lib/locale.
    return { reads: [...writes, 'path:/usr/lib/locale', 'path:/usr/share/i18n', `path:${LOCAL_SUPPORTED}`], writes };
  },
  wrote: (_p, undo) => [...pathWrote(undo?.localeGen ?? null), ...pathWrote(undo?.archive ?? null), ...pathWrote(undo?.defaults ?? null)],
  undoSummary,
  undoMismatch,
};
