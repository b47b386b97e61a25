/**
 * `unarchive`: an archive (beside the recipe, or already on the host) unpacked into a folder.
 *
 * The controller reads the archive, checks every member (archive.ts: nothing may land outside
 * dest) and plans against what the host has at each member's path. The host never runs tar or
 * unzip on the archive: the apply sends it only the checked members, and writes each one the way
 * every host write here is made (safe-path.ts): folders entered from `/` refusing a link another
 * user could have planted, files written to a fresh name and renamed over the old one. What an
 * apply replaces is copied first to the run's root-only backups; its undo data lists exactly what
 * it creates and what it replaces, and rollback removes the one and restores the other, leaving
 * everything else in dest alone.
 *
 * Unchanged: `creates` exists, or every member is already there as the archive has it (a file
 * with the same sha256 and permission bits, a link with the same target, any folder), and with
 * owner/group as given. Host files are hashed only when their size matches, so the read is cheap.
 * Folders that already exist are left as they are (mode and owner), as tar's --no-overwrite-dir.
 */
import { posix } from 'node:path';
import { z } from 'zod';
import { InputError, StepError } from '../../errors.js';
import { answerOf, guardScript, remember, runOneExec } from '../../shell/one-exec.js';
import { octal, quote } from '../../shell/quote.js';
import { enterScript, splitPath, unsafeParentsScript, withSafePath } from '../../shell/safe-path.js';
import { backupPath } from '../backup.js';
import { sourceProblems } from '../file-state.js';
import type { Footprint } from '../footprint.js';
import { absolutePath, ownerName } from '../paths.js';
import { backupMismatch, sha256, tail, type Plan, type PlanEnv, type StepContext, type StepType } from '../step.js';
import { names, str, type UndoData } from '../undo-text.js';
import { archiveName, FORMATS, formatOf, listArchive, zstdLocally, type Format, type Listing, type Member } from './archive.js';

export const unarchiveSchema = z
  .object({
    src: z.string().min(1).optional(),
    remote_src: absolutePath.optional(),
    dest: absolutePath.refine((d) => d !== '/', 'cannot unpack into / itself: name a folder'),
    creates: absolutePath.optional(),
    strip_components: z.number().int().min(0).default(0),
    format: z.enum(FORMATS).optional(),
    owner: ownerName('owner').optional(),
    group: ownerName('group').optional(),
  })
  .strict()
  .superRefine((p, ctx) => {
    if ((p.src === undefined) === (p.remote_src === undefined)) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'give either src (a file beside the recipe) or remote_src (a file on the host)', path: ['src'] });
    }
    const name = p.src ?? p.remote_src;
    if (name !== undefined && p.format === undefined && !name.includes('{{') && !formatOf(name)) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: `cannot tell the format from the name ${JSON.stringify(name)}: give format (${FORMATS.join(', ')})`, path: ['format'] });
    }
  });

export type UnarchiveParams = z.output<typeof unarchiveSchema> & {
  /**
   * The archive as prepare read and checked it: its sha256 and members (paths, kinds, modes,
   * hashes; no bytes). Kept with the params, so the journal knows what was unpacked and undo,
   * recover and their reads of the host need neither the recipe nor the archive. Absent when a
   * remote_src is not on the host yet (an earlier step of the run puts it there).
   */
  archive?: { sha256: string; members: Member[] };
};

/** What is at one member's path on the host. */
export interface HostEntry {
  kind: 'absent' | 'file' | 'directory' | 'link' | 'other' | 'blocked';
  mode?: number;
  owner?: string;
  group?: string;
  size?: number;
  /** A file's sha256, read only when its size is the member's. */
  sha256?: string;
  target?: string;
}

export interface UnarchiveState {
  /** `creates` exists: nothing is read beyond it. */
  created?: boolean;
  /** dest: absent, directory, or something else (refused). */
  dest: 'absent' | 'directory' | 'other';
  /** dest and the folders above it that do not exist, outermost first. */
  missing: string[];
  /** By member path; absent from the map when dest does not exist. */
  host: Record<string, HostEntry>;
}

export interface UnarchiveUndo {
  dest: string;
  /** Files and links the apply creates. */
  created: string[];
  /** Folders it creates (dest's missing parents, dest, folders in it), outermost first. */
  dirs: string[];
  /** What it replaces, each copied to its backup first. */
  replaced: Array<{ path: string; backup: string }>;
}

const formatFor = (p: UnarchiveParams): Format => p.format ?? formatOf(p.src ?? p.remote_src ?? '')!;
const nameFor = (p: UnarchiveParams) => archiveName(p.src ?? p.remote_src ?? '');
const abs = (dest: string, rel: string) => (rel === '' ? dest : `${dest}/${rel}`);

/** Listings by archive digest, format and strip: a fleet reads one archive once. */
const listings = new Map<string, Promise<Listing>>();

/** Exit status of the read of a remote_src that is not there. */
const NO_ARCHIVE = 3;

/** The archive's bytes: from beside the recipe, or read from the host (through no planted link); null: no remote_src there. */
async function archiveBytes(ctx: StepContext, p: UnarchiveParams): Promise<Buffer | null> {
  if (p.src !== undefined) {
    const { content } = await ctx.readSource(p.src, 'files').catch((e: unknown) => {
      throw new InputError(`step "${ctx.step}": unarchive.src: ${(e as Error).message}`);
    });
    return content;
  }
  const r = p.remote_src!;
  const got = await ctx.exec(
    `${unsafeParentsScript(r)}\n[ -e ${quote(r)} ] || [ -L ${quote(r)} ] || exit ${NO_ARCHIVE}\n[ -f ${quote(r)} ] || { printf '%s\\n' ${quote(`hostsmith: ${r} is not a file`)} >&2; exit 1; }\ncat -- ${quote(r)}`,
  );
  if (got.code === NO_ARCHIVE) return null;
  if (got.code !== 0) throw new StepError(`cannot read ${r}: ${tail(got.stderr) || `exit ${got.code}`}`, { code: got.code, stderr: got.stderr });
  return got.stdoutRaw;
}

/**
 * xz and (on Node 20) zstd cannot be decoded on the controller: the host's own xz or zstd does
 * it, as a read (the archive in on stdin, the tar out on stdout, nothing written).
 */
async function plainTar(ctx: StepContext, bytes: Buffer, format: 'tar.xz' | 'tar.zst', name: string): Promise<Buffer> {
  if (format === 'tar.zst') {
    const local = zstdLocally(bytes);
    if (local) return local;
  }
  const [tool, pkg] = format === 'tar.xz' ? ['xz', 'xz-utils'] : ['zstd', 'zstd'];
  const r = await ctx.exec(`command -v ${tool} >/dev/null 2>&1 || exit 127\n${tool} -dc`, { stdin: bytes });
  if (r.code === 127) {
    throw new StepError(
      `cannot list ${name}: this controller cannot decompress ${format} itself, and the host has no ${tool} to do it as a read; install ${pkg} on the host first (a package step before this one), or ship a .tar.gz`,
    );
  }
  if (r.code !== 0) throw new StepError(`cannot decompress ${name} with the host's ${tool}: ${tail(r.stderr) || `exit ${r.code}`}`);
  return r.stdoutRaw;
}

const listingKey = (p: UnarchiveParams, digest: string) => `${digest} ${formatFor(p)} ${p.strip_components}`;

/** The archive, read and checked (cached by its digest); null: a remote_src not there. */
async function loadArchive(ctx: StepContext, p: UnarchiveParams): Promise<{ sha256: string; listing: Listing } | null> {
  const bytes = await archiveBytes(ctx, p);
  if (!bytes) return null;
  const digest = sha256(bytes);
  const format = formatFor(p);
  const key = listingKey(p, digest);
  let listing = listings.get(key);
  if (!listing) {
    const name = nameFor(p);
    listing = (async () => {
      const plain = format === 'tar.xz' || format === 'tar.zst' ? await plainTar(ctx, bytes, format, name) : bytes;
      return listArchive(plain, format === 'zip' ? 'zip' : 'tar', p.strip_components, name);
    })();
    listings.set(key, listing);
    listing.catch(() => listings.delete(key));
    // A handful is enough for a run; archives can be large.
    while (listings.size > 4) listings.delete(listings.keys().next().value!);
  }
  return { sha256: digest, listing: await listing };
}

/** The members to unpack, or why there are none yet. */
function membersOf(p: UnarchiveParams): Member[] {
  if (!p.archive) throw new StepError(`${p.remote_src ?? p.src} is not on the host (yet): nothing to unpack`);
  return p.archive.members;
}

/** The file bytes of the members, for the apply: from the listing prepare made, else read again (and held to the planned sha256). */
async function contentsFor(ctx: StepContext, p: UnarchiveParams, digest: string): Promise<Map<string, Buffer>> {
  const cached = await listings.get(listingKey(p, digest))?.catch(() => undefined);
  if (cached) return cached.contents;
  const again = await loadArchive(ctx, p);
  if (!again || again.sha256 !== digest) throw new StepError(`${nameFor(p)} changed since it was planned; nothing was written`);
  return again.listing.contents;
}

/**
 * The one read of the host: whether `creates` exists, what dest is and which of its parents are
 * missing, and for every member what is at its path (kind, mode, owner, group, size; a file's
 * sha256 when its size is the member's; a link's target). Fields are NUL-terminated. A member
 * whose folder on the host leads elsewhere (a link, already refused by the member naming that
 * folder) is reported "blocked" rather than read through.
 */
export function checkScript(p: UnarchiveParams, members: Member[]): string {
  const dest = p.dest;
  const lines = [unsafeParentsScript(`${dest}/x`)];
  if (p.creates !== undefined) lines.push(`if [ -e ${quote(p.creates)} ] || [ -L ${quote(p.creates)} ]; then printf 'created\\0'; exit 0; fi`);
  lines.push(
    `p=${quote(dest)}`,
    'n=0; d=$p',
    'while [ -n "$d" ] && [ ! -e "$d" ] && [ ! -L "$d" ]; do n=$((n+1)); d=${d%/*}; done',
    `if [ "$n" -gt 0 ]; then printf 'absent\\0%s\\0' "$n"; exit 0; fi`,
    `if [ -L "$p" ] || [ ! -d "$p" ]; then printf 'other\\0\\0'; exit 0; fi`,
    "printf 'directory\\0\\0'",
    'cd -P -- "$p" || exit 1',
    'hs_root=$(pwd -P); hs_last=; hs_ok=1',
    // $1 member, $2 its size, $3 its folder: whether that folder is where it says (no link on the way).
    'hs_e() {',
    '  if [ "$3" != "$hs_last" ]; then hs_last=$3; hs_ok=1; [ -z "$3" ] || [ "$(cd -P -- "./$3" 2>/dev/null && pwd -P)" = "$hs_root/$3" ] || hs_ok=0; fi',
    '  if [ $hs_ok = 0 ]; then if [ -e "./$3" ] || [ -L "./$3" ]; then printf \'blocked\\0\\0\\0\\0\\0\\0\'; else printf \'absent\\0\\0\\0\\0\\0\\0\'; fi; return 0; fi',
    '  if [ -L "./$1" ]; then printf \'link\\0\'; stat --printf \'%a\\0%U\\0%G\\0%s\\0\' -- "./$1" || exit 1; readlink -z -- "./$1" || exit 1',
    "  elif [ -d \"./$1\" ]; then printf 'directory\\0'; stat --printf '%a\\0%U\\0%G\\0%s\\0' -- \"./$1\" || exit 1; printf '\\0'",
    '  elif [ -f "./$1" ]; then printf \'file\\0\'; stat --printf \'%a\\0%U\\0%G\\0%s\\0\' -- "./$1" || exit 1',
    '    if [ "$(stat -c %s -- "./$1")" = "$2" ]; then sha256sum < "./$1" | cut -c1-64 | tr -d "\\n"; fi; printf \'\\0\'',
    '  elif [ -e "./$1" ] || [ -L "./$1" ]; then printf \'other\\0\\0\\0\\0\\0\\0\'',
    "  else printf 'absent\\0\\0\\0\\0\\0\\0'; fi",
    '}',
    ...members.map((m) => `hs_e ${quote(m.path)} ${m.size ?? "''"} ${quote(posix.dirname(m.path) === '.' ? '' : posix.dirname(m.path))}`),
  );
  return lines.join('\n');
}

/** Reads what checkScript printed. */
export function parseCheck(raw: Buffer, p: UnarchiveParams, members: Member[]): UnarchiveState {
  const fields: string[] = [];
  let at = 0;
  while (at < raw.length) {
    const end = raw.indexOf(0, at);
    if (end < 0) break;
    fields.push(raw.subarray(at, end).toString('utf8'));
    at = end + 1;
  }
  const bad = (why: string) => new StepError(`cannot read ${p.dest}: the host's answer ${why}`);
  if (fields[0] === 'created') return { created: true, dest: 'absent', missing: [], host: {} };
  const [kind, count] = fields;
  if (kind === 'absent') {
    const missing: string[] = [];
    for (let d = p.dest, i = 0; i < Number(count) && d !== '/'; i++, d = posix.dirname(d)) missing.unshift(d);
    return { dest: 'absent', missing, host: {} };
  }
  if (kind === 'other') return { dest: 'other', missing: [], host: {} };
  if (kind !== 'directory') throw bad(`was unexpected (${JSON.stringify(kind)})`);
  if (fields.length !== 2 + members.length * 6) throw bad(`was cut short (${fields.length} fields for ${members.length} members)`);
  const host: Record<string, HostEntry> = {};
  members.forEach((m, i) => {
    const [k, mode, owner, group, size, extra] = fields.slice(2 + i * 6, 8 + i * 6) as [string, string, string, string, string, string];
    if (!['absent', 'file', 'directory', 'link', 'other', 'blocked'].includes(k)) throw bad(`was unexpected for ${m.path} (${JSON.stringify(k)})`);
    const e: HostEntry = { kind: k as HostEntry['kind'] };
    if (mode) Object.assign(e, { mode: parseInt(mode, 8), owner, group, size: Number(size) });
    if (k === 'file' && extra) e.sha256 = extra;
    if (k === 'link') e.target = extra;
    host[m.path] = e;
  });
  return { dest: 'directory', missing: [], host };
}

/** Does the host's entry already hold the member as the step would leave it? */
function same(p: UnarchiveParams, m: Member, h: HostEntry): boolean {
  const owned = (p.owner === undefined || p.owner === h.owner) && (p.group === undefined || p.group === h.group);
  if (m.kind === 'directory') return h.kind === 'directory';
  if (m.kind === 'link') return h.kind === 'link' && h.target === m.target && owned;
  return h.kind === 'file' && h.sha256 === m.sha256 && h.mode === m.mode && owned;
}

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/** The pure decision: which members are new, which replace what is there, and how to undo it. */
export function planUnarchive(p: UnarchiveParams, s: UnarchiveState, env: PlanEnv): Plan<UnarchiveUndo> {
  const name = nameFor(p);
  if (s.created) return { changed: false, summary: `${p.creates} exists (creates): ${name} is not unpacked`, undo: null };
  if (s.dest === 'other') throw new StepError(`${p.dest} is not a folder (a file, or a link): remove it first, or unpack elsewhere`);
  const created: string[] = [];
  const dirs: string[] = [...s.missing];
  const replaced: Array<{ path: string; backup: string }> = [];
  let same_ = 0;
  const members = membersOf(p);
  for (const m of members) {
    const path = abs(p.dest, m.path);
    const h = s.host[m.path] ?? { kind: 'absent' };
    if (h.kind === 'blocked') continue; // the member naming the folder that leads elsewhere is refused below
    if (h.kind === 'absent') {
      (m.kind === 'directory' ? dirs : created).push(path);
      continue;
    }
    if (m.kind === 'directory' && h.kind !== 'directory') {
      throw new StepError(`${path} is a ${h.kind === 'link' ? 'symbolic link' : h.kind} on the host where ${name} has a folder; hostsmith does not unpack through or over it — remove it first`);
    }
    if (m.kind !== 'directory' && (h.kind === 'directory' || h.kind === 'other')) {
      throw new StepError(`${path} is a ${h.kind === 'other' ? 'special file' : 'folder'} on the host where ${name} has a ${m.kind}; remove it first`);
    }
    if (same(p, m, h)) same_ += m.kind === 'directory' ? 0 : 1;
    else replaced.push({ path, backup: backupPath(env, path) });
  }
  const files = members.filter((m) => m.kind !== 'directory').length;
  if (!created.length && !replaced.length && !dirs.length) {
    return { changed: false, summary: `${name} is already unpacked in ${p.dest} (${plural(files, 'file')} as in the archive)`, undo: null };
  }
  const parts = [plural(created.length, 'new file'), `${replaced.length} replaced`];
  const inDest = dirs.filter((d) => d === p.dest || d.startsWith(`${p.dest}/`)).length;
  if (inDest) parts.push(plural(inDest, 'new folder'));
  if (same_) parts.push(`${same_} unchanged`);
  return {
    changed: true,
    action: replaced.length ? 'change' : 'create',
    summary: `unpack ${name} into ${p.dest}: ${parts.join(', ')}`,
    undo: { dest: p.dest, created, dirs, replaced },
  };
}

const chownSpec = (p: Pick<UnarchiveParams, 'owner' | 'group'>) => (p.owner || p.group ? `${p.owner ?? ''}${p.group ? `:${p.group}` : ''}` : '');

/**
 * The change, in one script, and the bytes it reads on stdin: dest made (as mkdir -p), then each
 * folder of the archive entered from `/` in turn (parents first), refusing planted links, and its
 * members made there by their bare names: folders with mkdir, files through hs_write (a new file
 * renamed over whatever was there: a link there is replaced, not written through), links with
 * ln -sfT. Folders that were there are not touched.
 */
export function changeScript(p: UnarchiveParams, members: Member[], contents: Map<string, Buffer>, undo: UnarchiveUndo): { script: string; stdin: Buffer } {
  const own = chownSpec(p);
  const todo = new Set([...undo.created, ...undo.dirs, ...undo.replaced.map((r) => r.path)]);
  const byFolder = new Map<string, Member[]>([['', []]]);
  for (const m of members) {
    if (m.kind === 'directory') byFolder.set(m.path, byFolder.get(m.path) ?? []);
    const dir = posix.dirname(m.path) === '.' ? '' : posix.dirname(m.path);
    if (todo.has(abs(p.dest, m.path))) byFolder.get(dir)!.push(m);
  }
  const lines = [`hs_mkcd ${quote(p.dest)} || exit $?`];
  if (own && undo.dirs.includes(p.dest)) lines.push(`hs_meta . '' ${quote(own)} || exit $?`);
  const stdin: Buffer[] = [];
  // Folders in the order members are (parents first); only those with something to do.
  for (const [dir, ms] of byFolder) {
    if (!ms.length) continue;
    const body = ms.map((m) => {
      const n = quote(posix.basename(m.path));
      if (m.kind === 'directory') return `mkdir -m 0700 -- ${n} && hs_meta ${n} ${octal(m.mode)} ${quote(own)}`;
      if (m.kind === 'link') return `ln -sfT -- ${quote(m.target ?? '')} ${n}${own ? ` && chown -h ${quote(own)} -- ${n}` : ''}`;
      const data = contents.get(m.path) ?? Buffer.alloc(0);
      stdin.push(data);
      return `head -c ${data.length} | hs_write ${n} ${octal(m.mode)} ${quote(own)}`;
    });
    lines.push(`( ${enterScript(abs(p.dest, dir))}\n${body.map((b) => `${b} || exit $?`).join('\n')}\n) || exit $?`);
  }
  return { script: withSafePath(lines.join('\n')), stdin: Buffer.concat(stdin) };
}

/** Shell: each replaced path copied (as it is: file or link, with its metadata) to its backup, root-only. */
export function backupScript(ctx: Pick<StepContext, 'backupDir'>, undo: UnarchiveUndo): string {
  const root = quote(posix.dirname(ctx.backupDir));
  const lines = [`umask 077 && mkdir -p ${root} && chmod 0700 ${root} || exit 1`];
  for (const r of undo.replaced) {
    const { dir, base } = splitPath(r.path);
    const b = quote(r.backup);
    lines.push(`( mkdir -p ${quote(posix.dirname(r.backup))} && rm -rf -- ${b} || exit 1\n${enterScript(dir)}\ncp -a -- ${quote(base)} ${b} || { rc=$?; rm -rf -- ${b}; exit $rc; }\n) || exit $?`);
  }
  return withSafePath(lines.join('\n'));
}

/**
 * The rollback, for the controller and the lockout watchdog alike: the files and links it
 * created removed, what it replaced put back from its backup, then the folders it created
 * removed deepest first when empty (what someone else put in one keeps it). A replaced path with
 * no backup was never written (the backups are made before any write, in the same exec): left as
 * it is. Safe to run again.
 */
export function rollbackScript(undo: UnarchiveUndo): string {
  const at = (path: string, act: (n: string) => string) => {
    const { dir, base } = splitPath(path);
    return `( ${enterScript(dir, { missingOk: true })}\n${act(quote(base))}\n) || exit $?`;
  };
  const lines = [
    ...[...undo.created].reverse().map((f) => at(f, (n) => `if [ -L ${n} ] || [ ! -d ${n} ]; then rm -f -- ${n}; fi`)),
    ...undo.replaced.map(({ path, backup }) => {
      const b = quote(backup);
      const { dir, base } = splitPath(path);
      const n = quote(base);
      return [
        `( { [ -e ${b} ] || [ -L ${b} ]; } || exit 0`,
        enterScript(dir),
        `tmp=.hostsmith-restore.$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')`,
        `cp -a -- ${b} "$tmp" || { rc=$?; rm -rf -- "$tmp"; exit $rc; }`,
        `if [ -d ${n} ] && [ ! -L ${n} ]; then rm -rf -- "$tmp"; printf '%s\\n' ${quote(`hostsmith: ${path} is now a folder; not replaced by its backup`)} >&2; exit 1; fi`,
        `mv -fT -- "$tmp" ${n}`,
        ') || exit $?',
      ].join('\n');
    }),
    ...[...undo.dirs]
      .reverse()
      .map((d) =>
        at(d, (n) => `if [ -d ${n} ] && [ ! -L ${n} ]; then rmdir -- ${n} 2>/dev/null || printf '%s\\n' ${quote(`hostsmith: left ${d} in place: it holds what the step did not put there`)} >&2; fi`),
      ),
  ];
  return withSafePath(lines.join('\n'));
}

export const unarchiveStep: StepType<UnarchiveParams, UnarchiveState, UnarchiveUndo> = {
  type: 'unarchive',
  schema: unarchiveSchema,
  async prepare(ctx, p) {
    const got = await loadArchive(ctx, p);
    return got ? { ...p, archive: { sha256: got.sha256, members: got.listing.members } } : p;
  },
  async check(ctx, p) {
    const members = membersOf(p);
    const r = await ctx.exec(checkScript(p, members));
    if (r.code !== 0) throw new StepError(`cannot read ${p.dest}: ${tail(r.stderr) || `exit ${r.code}`}`, { code: r.code, stderr: r.stderr });
    return remember<UnarchiveState>(parseCheck(r.stdoutRaw, p, members), r.stdoutRaw);
  },
  guarded: true,
  plan: planUnarchive,
  async apply(ctx, p, plan, s) {
    const undo = plan.undo;
    if (!undo) return {};
    const members = membersOf(p);
    const contents = await contentsFor(ctx, p, p.archive!.sha256);
    const { script, stdin } = changeScript(p, members, contents, undo);
    const raw = answerOf(s);
    const check = checkScript(p, members);
    const { r, failed } = await runOneExec(
      ctx,
      {
        ...(raw ? { guard: guardScript(check, raw) } : {}),
        stages: [...(undo.replaced.length ? [{ name: 'backup', script: backupScript(ctx, undo) }] : []), { name: 'change', script }],
        read: check,
      },
      `someone changed ${p.dest} after it was read`,
      { stdin },
    );
    if (failed && failed.stage !== 'read') {
      const said = tail(failed.said) || tail(r.stdout, 5);
      const what = failed.stage === 'backup' ? `backing up what ${nameFor(p)} replaces in ${p.dest}` : `unpacking ${nameFor(p)} into ${p.dest}`;
      throw new StepError(`${what} failed (exit ${failed.code})${said ? `: ${said}` : ''}`, { code: failed.code, stderr: failed.said });
    }
    if (failed) return {};
    try {
      return { state: parseCheck(r.stdoutRaw, p, members) };
    } catch {
      return {};
    }
  },
  async rollback(ctx, _p, undo) {
    const r = await ctx.exec(rollbackScript(undo));
    if (r.code !== 0) throw new StepError(`rolling back the unpack into ${undo.dest} failed (exit ${r.code}): ${tail(r.stderr) || tail(r.stdout, 5)}`, { code: r.code, stderr: r.stderr });
  },
  hostRollback: (_p, undo) => rollbackScript(undo),
  footprint(p): Footprint {
    const reads = [`path:${p.dest}`, ...(p.creates ? [`path:${p.creates}`] : []), ...(p.remote_src ? [`path:${p.remote_src}`] : [])];
    return { reads, writes: [`path:${p.dest}`] };
  },
  wrote: (p, undo) => (undo ? undo.dirs.filter((d) => d !== p.dest && !d.startsWith(`${p.dest}/`)).map((d) => `path:${d}`) : []),
  undoSummary(u: UndoData): string {
    const created = names(u, 'created');
    const dirs = names(u, 'dirs');
    const replaced = Array.isArray(u.replaced) ? u.replaced.length : 0;
    const parts = [`remove ${plural(created.length, 'file')} and ${plural(dirs.length, 'folder')} unpacked into ${str(u, 'dest') ?? '?'}`];
    if (replaced) parts.push(`put back ${plural(replaced, 'replaced file')} from the backups`);
    return parts.join('; ');
  },
  undoMismatch(p, u: UndoData): string | undefined {
    if (u.dest !== p.dest) return `its undo data is for ${JSON.stringify(u.dest)}, not the step's ${p.dest}`;
    const under = (x: unknown) => typeof x === 'string' && x.startsWith(`${p.dest}/`) && !x.split('/').includes('..');
    const created = Array.isArray(u.created) ? u.created : [];
    const bad = created.find((x) => !under(x));
    if (bad !== undefined) return `its undo data would remove ${JSON.stringify(bad)}, which is not in ${p.dest}`;
    const dirs = Array.isArray(u.dirs) ? u.dirs : [];
    const badDir = dirs.find((d) => !(d === p.dest || under(d) || (typeof d === 'string' && d.startsWith('/') && p.dest.startsWith(`${d}/`))));
    if (badDir !== undefined) return `its undo data would remove the folder ${JSON.stringify(badDir)}, which is neither in ${p.dest} nor above it`;
    for (const r of Array.isArray(u.replaced) ? u.replaced : []) {
      const path = (r as UndoData)?.path;
      if (!under(path)) return `its undo data would restore ${JSON.stringify(path)}, which is not in ${p.dest}`;
      const why = backupMismatch((r as UndoData).backup ?? null, path as string);
      if (why) return why;
    }
    return undefined;
  },
  staticCheck: (raw, env) => sourceProblems(raw, env, 'files', 'unarchive'),
};
