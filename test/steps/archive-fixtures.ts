/**
 * Tiny tar and zip writers for tests: they write any name and any link target as given, which
 * archivers refuse to (a tar-slip or zip-slip archive is exactly what the tests need).
 */
import { crc32, gzipSync } from 'node:zlib';

export interface Entry {
  name: string;
  type?: 'file' | 'dir' | 'symlink' | 'hardlink' | 'fifo';
  data?: string | Buffer;
  mode?: number;
  link?: string;
}

function field(b: Buffer, at: number, len: number, s: string): void {
  b.write(s, at, len, 'utf8');
}

const oct = (n: number, len: number) => n.toString(8).padStart(len - 1, '0');

/** A plain (ustar) tar. */
export function tarOf(entries: Entry[]): Buffer {
  const out: Buffer[] = [];
  for (const e of entries) {
    const data = e.type === undefined || e.type === 'file' ? Buffer.from(e.data ?? '') : Buffer.alloc(0);
    const h = Buffer.alloc(512);
    field(h, 0, 100, e.name);
    field(h, 100, 8, oct(e.mode ?? (e.type === 'dir' ? 0o755 : e.type === 'symlink' ? 0o777 : 0o644), 8));
    field(h, 108, 8, oct(0, 8));
    field(h, 116, 8, oct(0, 8));
    field(h, 124, 12, oct(data.length, 12));
    field(h, 136, 12, oct(1_700_000_000, 12));
    field(h, 156, 1, { file: '0', dir: '5', symlink: '2', hardlink: '1', fifo: '6' }[e.type ?? 'file']);
    field(h, 157, 100, e.link ?? '');
    field(h, 257, 6, 'ustar');
    field(h, 263, 2, '00');
    field(h, 265, 32, 'root');
    field(h, 297, 32, 'root');
    h.fill(0x20, 148, 156);
    let sum = 0;
    for (const byte of h) sum += byte;
    field(h, 148, 8, `${oct(sum, 7)}\0`);
    out.push(h, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  out.push(Buffer.alloc(1024));
  return Buffer.concat(out);
}

export const tgzOf = (entries: Entry[]) => gzipSync(tarOf(entries));

/** A zip with stored (uncompressed) members and unix modes. */
export function zipOf(entries: Entry[]): Buffer {
  const locals: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const e of entries) {
    const name = Buffer.from(e.name, 'utf8');
    const data = e.type === 'symlink' ? Buffer.from(e.link ?? '') : Buffer.from(e.data ?? '');
    const mode = (e.type === 'dir' ? 0o040000 : e.type === 'symlink' ? 0o120000 : 0o100000) | (e.mode ?? (e.type === 'dir' ? 0o755 : 0o644));
    const crc = crc32(data);
    const l = Buffer.alloc(30);
    l.writeUInt32LE(0x04034b50, 0);
    l.writeUInt16LE(20, 4);
    l.writeUInt16LE(0x800, 6);
    l.writeUInt32LE(crc, 14);
    l.writeUInt32LE(data.length, 18);
    l.writeUInt32LE(data.length, 22);
    l.writeUInt16LE(name.length, 26);
    locals.push(l, name, data);
    const c = Buffer.alloc(46);
    c.writeUInt32LE(0x02014b50, 0);
    c.writeUInt16LE((3 << 8) | 20, 4);
    c.writeUInt16LE(20, 6);
    c.writeUInt16LE(0x800, 8);
    c.writeUInt32LE(crc, 16);
    c.writeUInt32LE(data.length, 20);
    c.writeUInt32LE(data.length, 24);
    c.writeUInt16LE(name.length, 28);
    c.writeUInt32LE((mode << 16) >>> 0, 38);
    c.writeUInt32LE(offset, 42);
    central.push(c, name);
    offset += 30 + name.length + data.length;
  }
  const cd = Buffer.concat(central);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, end]);
}
