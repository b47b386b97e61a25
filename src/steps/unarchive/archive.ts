/**
 * Reading an archive on the controller: its members, their bytes, and the refusal of any member
 * that would land outside the folder it is unpacked into (tar-slip, zip-slip).
 *
 * The host never unpacks the archive itself: the controller lists it, checks every member, and
 * sends the host only the members it checked (see unarchive.ts). So what the plan shows is what
 * the apply writes, and the host needs neither unzip nor a tar that resists hostile archives.
 */
import { posix } from 'node:path';
import * as zlib from 'node:zlib';
import { Parser, type ReadEntry } from 'tar';
import yauzl from 'yauzl';
import { StepError } from '../../errors.js';
import { sha256 } from '../step.js';

export const FORMATS = ['tar', 'tar.gz', 'tar.xz', 'tar.zst', 'zip'] as const;
export type Format = (typeof FORMATS)[number];

/** The format a file name says, or undefined. */
export function formatOf(name: string): Format | undefined {
  const n = name.toLowerCase();
  if (n.endsWith('.tar.gz') || n.endsWith('.tgz')) return 'tar.gz';
  if (n.endsWith('.tar.xz') || n.endsWith('.txz')) return 'tar.xz';
  if (n.endsWith('.tar.zst') || n.endsWith('.tzst')) return 'tar.zst';
  if (n.endsWith('.tar')) return 'tar';
  if (n.endsWith('.zip')) return 'zip';
  return undefined;
}

/** One entry as the archive holds it, before any check. */
export interface RawEntry {
  name: string;
  type: 'file' | 'directory' | 'symlink' | 'hardlink' | 'other';
  /** What "other" is, for the refusal (a device, a fifo). */
  typeName?: string;
  mode: number;
  /** A link's target (symlink: as written; hardlink: another member's name). */
  linkTarget?: string;
  data?: Buffer;
}

/** A checked member, its path relative to the folder it is unpacked into. */
export interface Member {
  path: string;
  kind: 'file' | 'directory' | 'link';
  /** Permission bits only: owners in the archive are not kept, nor setuid/setgid/sticky bits. */
  mode: number;
  size?: number;
  sha256?: string;
  target?: string;
}

export interface Listing {
  members: Member[];
  /** File bytes by member path. */
  contents: Map<string, Buffer>;
}

/** Tar entries (plain or gzip: node-tar tells them apart by their first bytes). */
export function tarEntries(bytes: Buffer): Promise<RawEntry[]> {
  return new Promise((resolve, reject) => {
    const out: RawEntry[] = [];
    const parser = new Parser({
      strict: true,
      onReadEntry(e: ReadEntry) {
        const chunks: Buffer[] = [];
        e.on('data', (d: Buffer) => chunks.push(d));
        e.on('end', () => out.push({ name: e.path, ...tarType(e.type), mode: e.mode ?? 0, linkTarget: e.linkpath, data: Buffer.concat(chunks) }));
      },
    });
    parser.on('error', (err: Error) => reject(new StepError(`cannot read the archive as tar: ${err.message}`)));
    parser.on('end', () => resolve(out));
    parser.end(bytes);
  });
}

function tarType(t: string): Pick<RawEntry, 'type' | 'typeName'> {
  switch (t) {
    case 'File':
    case 'OldFile':
    case 'ContiguousFile':
      return { type: 'file' };
    case 'Directory':
    case 'GNUDumpDir':
      return { type: 'directory' };
    case 'SymbolicLink':
      return { type: 'symlink' };
    case 'Link':
      return { type: 'hardlink' };
    default:
      return { type: 'other', typeName: t };
  }
}

/** Zip entries. Names are taken as stored: the checks are ours (refuse), not the library's. */
export function zipEntries(bytes: Buffer): Promise<RawEntry[]> {
  return new Promise((resolve, reject) => {
    const fail = (err: Error) => reject(err instanceof StepError ? err : new StepError(`cannot read the archive as zip: ${err.message}`));
    yauzl.fromBuffer(bytes, { lazyEntries: true, decodeStrings: false, validateEntrySizes: true }, (err, zip) => {
      if (err || !zip) return fail(err ?? new Error('no archive'));
      const out: RawEntry[] = [];
      zip.on('error', fail);
      zip.on('end', () => resolve(out));
      zip.on('entry', (entry: yauzl.Entry) => {
        const raw = entry.fileName as unknown as Buffer;
        // Bit 11: the name is UTF-8; else it is in the archiver's own code page, read as latin1.
        const name = entry.generalPurposeBitFlag & 0x800 ? raw.toString('utf8') : raw.toString('latin1');
        const unixMode = (entry.externalFileAttributes >>> 16) & 0xffff;
        const fmt = unixMode & 0o170000;
        const type: RawEntry['type'] = name.endsWith('/') || fmt === 0o040000 ? 'directory' : fmt === 0o120000 ? 'symlink' : fmt === 0 || fmt === 0o100000 ? 'file' : 'other';
        if (type === 'directory') {
          out.push({ name, type, mode: unixMode & 0o7777 });
          zip.readEntry();
          return;
        }
        zip.openReadStream(entry, (e2, stream) => {
          if (e2 || !stream) return fail(e2 ?? new Error(`cannot read ${name}`));
          const chunks: Buffer[] = [];
          stream.on('data', (d: Buffer) => chunks.push(d));
          stream.on('error', fail);
          stream.on('end', () => {
            const data = Buffer.concat(chunks);
            out.push(
              type === 'symlink'
                ? { name, type, mode: 0o777, linkTarget: data.toString('utf8') }
                : { name, type, mode: unixMode & 0o7777, data, ...(type === 'other' ? { typeName: `mode ${fmt.toString(8)}` } : {}) },
            );
            zip.readEntry();
          });
        });
      });
      zip.readEntry();
    });
  });
}

/** zstd on the controller, when this Node has it (22.15 and later); else undefined. */
export function zstdLocally(bytes: Buffer): Buffer | undefined {
  const z = zlib as unknown as { zstdDecompressSync?: (b: Buffer) => Buffer };
  return z.zstdDecompressSync ? z.zstdDecompressSync(bytes) : undefined;
}

/** Why a member is refused: the archive named, the member, and what it would have done. */
function refuse(archive: string, name: string, why: string): StepError {
  return new StepError(`refusing ${archive}: member ${JSON.stringify(name)} ${why}; nothing was unpacked`);
}

/** The path's parts with "." and empty parts dropped; undefined when a ".." is among them. */
function parts(name: string): string[] | undefined {
  const out = name.split('/').filter((c) => c !== '' && c !== '.');
  return out.includes('..') ? undefined : out;
}

const depthOrder = (a: Member, b: Member) => {
  const x = a.path.split('/');
  const y = b.path.split('/');
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i]! < y[i]! ? -1 : 1;
  return x.length - y.length;
};

/**
 * Checks every entry and makes the members to unpack: paths relative to dest after stripping
 * `strip` leading parts, parents listed before what is in them. Refused (the whole archive):
 * an absolute name, a ".." part, a symbolic link whose target is absolute or leads out of dest
 * (through ".." or through another link of the archive), a member under a link of the archive,
 * a hard link to anything but an earlier file, devices and fifos, and a path given twice as
 * different kinds. A hard link becomes a copy of the file it names.
 */
export function checkEntries(entries: RawEntry[], strip: number, archive: string): Listing {
  const byPath = new Map<string, Member>();
  const contents = new Map<string, Buffer>();
  /** Where a raw name lands, or null when stripping leaves nothing of it. */
  const land = (name: string, what = 'has'): string | null => {
    if (name.includes('\0')) throw refuse(archive, name, 'has a NUL byte in its name');
    if (name.startsWith('/')) throw refuse(archive, name, `${what} an absolute path: it would be written outside dest (tar-slip/zip-slip)`);
    if (/^[A-Za-z]:/.test(name) || name.includes('\\')) throw refuse(archive, name, `${what} a Windows path (a drive letter or "\\"), which would not land where it says`);
    const ps = parts(name);
    if (!ps) throw refuse(archive, name, `${what} a ".." part: it could be written outside dest (tar-slip/zip-slip)`);
    const left = ps.slice(strip);
    return left.length ? left.join('/') : null;
  };
  const put = (m: Member, name: string) => {
    const had = byPath.get(m.path);
    if (had && had.kind !== m.kind) throw refuse(archive, name, `is a ${m.kind} where the archive already has a ${had.kind} of the same path`);
    byPath.set(m.path, m);
  };
  for (const e of entries) {
    const path = land(e.name);
    if (path === null) continue;
    const mode = e.mode & 0o777;
    switch (e.type) {
      case 'directory':
        put({ path, kind: 'directory', mode: mode || 0o755 }, e.name);
        break;
      case 'file': {
        const data = e.data ?? Buffer.alloc(0);
        put({ path, kind: 'file', mode: mode || 0o644, size: data.length, sha256: sha256(data) }, e.name);
        contents.set(path, data);
        break;
      }
      case 'hardlink': {
        const to = land(e.linkTarget ?? '', 'links to');
        const from = to === null ? undefined : byPath.get(to);
        if (from?.kind !== 'file') throw refuse(archive, e.name, `is a hard link to ${JSON.stringify(e.linkTarget)}, which is not a file earlier in the archive`);
        put({ ...from, path }, e.name);
        contents.set(path, contents.get(to!)!);
        break;
      }
      case 'symlink':
        put({ path, kind: 'link', mode: 0o777, target: e.linkTarget ?? '' }, e.name);
        break;
      default:
        throw refuse(archive, e.name, `is a ${e.typeName ?? 'special file'}: only files, folders and links are unpacked`);
    }
  }
  // Folders the archive implies (a/b/c without a/ and a/b/ entries) are made too.
  for (const path of [...byPath.keys()]) {
    const ps = path.split('/');
    for (let i = 1; i < ps.length; i++) {
      const dir = ps.slice(0, i).join('/');
      const had = byPath.get(dir);
      if (!had) byPath.set(dir, { path: dir, kind: 'directory', mode: 0o755 });
      else if (had.kind === 'link') throw refuse(archive, path, `lies under ${JSON.stringify(dir)}, a symbolic link of the archive: it would be written through that link`);
      else if (had.kind !== 'directory') throw refuse(archive, path, `lies under ${JSON.stringify(dir)}, which the archive has as a ${had.kind}`);
    }
  }
  for (const m of byPath.values()) if (m.kind === 'link') checkLink(m, byPath, archive);
  return { members: [...byPath.values()].sort(depthOrder), contents };
}

/**
 * A link's target must stay in dest, read as the host would: each ".." steps out of the folder
 * reached so far, and stepping out through another link of the archive is refused (where that
 * link leads is not the folder its name is in).
 */
function checkLink(m: Member, byPath: Map<string, Member>, archive: string): void {
  const target = m.target ?? '';
  if (target === '') throw refuse(archive, m.path, 'is a symbolic link with an empty target');
  if (target.startsWith('/')) throw refuse(archive, m.path, `is a symbolic link to the absolute path ${JSON.stringify(target)}: it points outside dest`);
  const at = m.path.split('/').slice(0, -1);
  for (const c of target.split('/')) {
    if (c === '' || c === '.') continue;
    if (c !== '..') {
      at.push(c);
      continue;
    }
    if (!at.length) throw refuse(archive, m.path, `is a symbolic link to ${JSON.stringify(target)}, which points outside dest (tar-slip/zip-slip)`);
    const through = byPath.get(at.join('/'));
    if (through?.kind === 'link')
      throw refuse(archive, m.path, `is a symbolic link to ${JSON.stringify(target)}, which steps out through the link ${JSON.stringify(through.path)}: where it leads cannot be told`);
    at.pop();
  }
}

/** Reads and checks an archive whose bytes are plain tar, tar.gz or zip. */
export async function listArchive(bytes: Buffer, format: 'tar' | 'tar.gz' | 'zip', strip: number, archive: string): Promise<Listing> {
  const entries = format === 'zip' ? await zipEntries(bytes) : await tarEntries(bytes);
  return checkEntries(entries, strip, archive);
}

/** The name of an archive path for summaries. */
export const archiveName = (path: string) => posix.basename(path);
