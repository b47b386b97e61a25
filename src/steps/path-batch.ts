/**
 * Many path reads for the price of three processes.
 *
 * A path's own read (file-state.ts checkScript) starts a `sh`, a `stat` and, for a file, a
 * `cat`: on a sandbox host each process costs 1-3 ms of CPU, and a no-op of a recipe with a dozen
 * files and templates spends most of its host CPU there. When a batch holds several such reads,
 * one `find` gives every path's kind, mode, owners, size and link target, a second `find` lists
 * the regular files and hands them all to one `cat`, and the controller cuts the bytes apart and
 * writes each read's answer exactly as its own script would have printed it, byte for byte: the
 * guard at a change's turn runs that script again and compares the digest of its answer, and the
 * tests hold the two equal on hostile trees.
 *
 * A command's `creates:`/`removes:` (`test -e`) is answered from the same look.
 *
 * Whatever this cannot answer with certainty (a name with no account behind it, a fifo or device,
 * files whose sizes moved between the two looks) it leaves unanswered, and the batch runs that
 * read's own script instead.
 */
import { posix } from 'node:path';
import { quote } from '../shell/quote.js';
import { folderPrefixes, readRefusal, REFUSED } from '../shell/safe-path.js';

/** What a batched read asks of a path: its whole state (file-state.ts), or whether `test -e` finds it. */
export type PathAsk = { kind: 'read' | 'exists'; path: string };

/** Scripts known to be such a read, and what each asks. Bounded: a miss only costs the saving. */
const ASKS = new Map<string, PathAsk>();
const MAX_KNOWN = 20_000;

function know(script: string, ask: PathAsk): string {
  if (ASKS.size >= MAX_KNOWN) ASKS.clear();
  ASKS.set(script, ask);
  return script;
}

/**
 * Only an absolute, normalised path joins the shared look: find takes it as a starting point (it
 * cannot be read as part of find's expression), and its folders are its prefixes.
 */
const lookable = (path: string): boolean => path.startsWith('/') && posix.normalize(path) === path && !path.endsWith('/');

/** file-state.ts calls this for every check script it builds. */
export function knowPathRead(script: string, path: string): void {
  if (lookable(path)) know(script, { kind: 'read', path });
}

/**
 * `test -e PATH`, as a command's `creates:`/`removes:` and a package's checks read it; one of a
 * path that is not lookable runs as written.
 */
export function existsScript(path: string): string {
  const script = `test -e ${quote(path)}`;
  return lookable(path) ? know(script, { kind: 'exists', path }) : script;
}

/** What a command asks, when the command is exactly such a read and nothing else. */
export function pathAskOf(script: string): PathAsk | undefined {
  return ASKS.get(script);
}

/** The key of an ask in pathAnswers' map. */
export const askKey = (a: PathAsk): string => `${a.kind}\0${a.path}`;

/** Files the host part writes in the batch's scratch folder `$T`, in this order. */
export const PATH_BATCH_FILES = ['pm', 'pf', 'pd'] as const;

const META = '%p\\0%y\\0%m\\0%u\\0%g\\0%U\\0%G\\0%s\\0%l\\0';
const META_FIELDS = 9;

/**
 * Shell for the batch: every path and folder once through `find` (lstat, as `stat` without -L
 * and `[ -L ]` look), then the regular files among the paths, their sizes and their bytes.
 */
export function pathBatchScript(asks: PathAsk[]): string {
  const reads = [...new Set(asks.filter((a) => a.kind === 'read').map((a) => a.path))];
  const all = [...new Set([...reads.flatMap((p) => [...folderPrefixes(p), p]), ...asks.filter((a) => a.kind === 'exists').map((a) => a.path), '/'])];
  const words = (list: string[]) => list.map((p) => quote(p)).join(' ');
  return [
    `find -P ${words(all)} -maxdepth 0 -printf '${META}' >"$T/pm" 2>/dev/null`,
    ...(reads.length ? [`find -P ${words(reads)} -maxdepth 0 -type f -fprintf "$T/pf" '%p\\0%s\\0' -exec cat -- {} + >"$T/pd" 2>/dev/null`] : []),
    // A find that could not run at all leaves no file: an empty one then stands for "nothing found".
    ': >>"$T/pf"; : >>"$T/pd"',
  ].join('\n');
}

interface Meta {
  kind: string;
  mode: string;
  /** Names as the host wrote them (bytes: a name is written back exactly as `stat` would print it). */
  user: Buffer;
  group: Buffer;
  uid: string;
  gid: string;
  size: number;
  target: Buffer;
}

function splitNul(b: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  for (;;) {
    const end = b.indexOf(0, at);
    if (end < 0) break;
    out.push(b.subarray(at, end));
    at = end + 1;
  }
  return out;
}

/** A read's answer: what its script prints and its exit code. */
export interface PathAnswer {
  code: number;
  stdout: Buffer;
  stderr: string;
}

const KINDS: Record<string, string> = { f: 'file', d: 'directory', l: 'link' };

/**
 * Each path's answer from what pathBatchScript left (`pm`, `pf`, `pd`); a path missing from the
 * map is one this cannot answer for certain. Undefined: the host's answer as a whole is not to
 * be trusted (find did not run, or the files moved between the looks).
 */
export function pathAnswers(asks: PathAsk[], out: { pm: Buffer; pf: Buffer; pd: Buffer }): Map<string, PathAnswer> | undefined {
  const meta = new Map<string, Meta>();
  const fields = splitNul(out.pm);
  if (fields.length % META_FIELDS !== 0) return undefined;
  for (let i = 0; i < fields.length; i += META_FIELDS) {
    const [p, y, m, u, g, U, G, s, l] = fields.slice(i, i + META_FIELDS) as [Buffer, Buffer, Buffer, Buffer, Buffer, Buffer, Buffer, Buffer, Buffer];
    meta.set(p.toString('utf8'), {
      kind: y.toString(),
      mode: m.toString(),
      user: u,
      group: g,
      uid: U.toString(),
      gid: G.toString(),
      size: Number(s.toString()),
      target: l,
    });
  }
  // `/` is always there: without it, find did not run.
  if (!meta.has('/')) return undefined;

  // The files' bytes: the second look must list exactly the regular files the first one saw, at
  // the same sizes, and the bytes must add up; otherwise something moved in between.
  const listed = splitNul(out.pf);
  const files = new Map<string, Buffer>();
  let at = 0;
  const wanted = [...new Set(asks.filter((a) => a.kind === 'read').map((a) => a.path))].filter((p) => meta.get(p)?.kind === 'f');
  if (listed.length !== wanted.length * 2) return undefined;
  for (let i = 0; i < listed.length; i += 2) {
    const p = listed[i]!.toString('utf8');
    const size = Number(listed[i + 1]!.toString());
    if (p !== wanted[i / 2] || meta.get(p)?.size !== size || at + size > out.pd.length) return undefined;
    files.set(p, out.pd.subarray(at, at + size));
    at += size;
  }
  if (at !== out.pd.length) return undefined;

  const answers = new Map<string, PathAnswer>();
  for (const ask of asks) {
    const a = ask.kind === 'read' ? answer(ask.path, meta, files) : exists(ask.path, meta);
    if (a) answers.set(askKey(ask), a);
  }
  return answers;
}

/**
 * `test -e`: stat follows a link at the end of the path where find's lstat does not, so only a
 * link is left to its own read. Not there for lstat is not there for stat either.
 */
function exists(path: string, meta: Map<string, Meta>): PathAnswer | undefined {
  const m = meta.get(path);
  if (m?.kind === 'l') return undefined;
  return { code: m ? 0 : 1, stdout: Buffer.alloc(0), stderr: '' };
}

const nul = (...xs: Array<string | Buffer>): Buffer => Buffer.concat(xs.flatMap((x) => [Buffer.isBuffer(x) ? x : Buffer.from(x, 'utf8'), Buffer.alloc(1)]));

/** One path's answer as checkScript prints it, or undefined where it cannot be sure. */
function answer(path: string, meta: Map<string, Meta>, files: Map<string, Buffer>): PathAnswer | undefined {
  const prefixes = folderPrefixes(path);
  // The folder check (safe-path.ts unsafeParentsScript): the folders that exist, in order; a
  // symbolic link among them is refused unless root made it in a folder only root can change.
  // What it compares with is the entry before it (the link itself, after a followed link), as
  // that script does.
  let parent: Meta | undefined;
  for (const [i, pre] of prefixes.entries()) {
    const m = meta.get(pre);
    if (!m) break;
    if (m.kind === 'l') {
      const pa = parent ? parseInt(parent.mode, 8) : 0;
      const held = parent !== undefined && parent.uid === '0' && ((pa & 0o1000) !== 0 || ((pa & 0o2) === 0 && ((pa & 0o20) === 0 || parent.gid === '0')));
      if (m.uid !== '0' || !held) {
        return {
          code: REFUSED,
          stdout: Buffer.alloc(0),
          stderr: readRefusal(prefixes[i]!, m.uid),
        };
      }
    }
    parent = m;
  }
  // Parent folders that are not there, counted up from the nearest (a dangling link is there).
  let missing = 0;
  for (let d = posix.dirname(path); d !== '/' && !meta.has(d); d = posix.dirname(d)) missing++;
  const m = meta.get(path);
  if (!m) return { code: 0, stdout: nul('absent', '', '', '', String(missing), ''), stderr: '' };
  const kind = KINDS[m.kind];
  // A fifo, socket or device; or an owner with no name (`stat` says UNKNOWN where find gives the number).
  if (!kind || m.user.toString() === m.uid || m.group.toString() === m.gid) return undefined;
  if (kind === 'link') return { code: 0, stdout: nul(kind, m.mode, m.user, m.group, String(missing), m.target), stderr: '' };
  const head = nul(kind, m.mode, m.user, m.group, String(missing), '');
  if (kind === 'directory') return { code: 0, stdout: head, stderr: '' };
  const bytes = files.get(path);
  return bytes ? { code: 0, stdout: Buffer.concat([head, bytes]), stderr: '' } : undefined;
}
