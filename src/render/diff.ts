import { createTwoFilesPatch } from 'diff';

// ignoreBOM keeps a byte-order mark in the text: host content is shown and written back byte for byte.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The text of a file's content, or undefined when it is binary (a NUL byte or not UTF-8). */
function asText(v: Buffer | string): string | undefined {
  if (typeof v === 'string') return v.includes('\0') ? undefined : v;
  if (v.includes(0)) return undefined;
  try {
    return utf8.decode(v);
  } catch {
    return undefined;
  }
}

function same(a: Buffer | string | null, b: Buffer | string | null): boolean {
  if (a === null || b === null) return a === b;
  return Buffer.from(a).equals(Buffer.from(b));
}

/**
 * A git-style unified diff of one file's content: `a/<path>` and `b/<path>` (a leading `/` is
 * dropped, as git does for repository paths), `/dev/null` for an absent side, and a
 * "Binary files ... differ" line when either side is not text. '' when nothing changes.
 */
export function unifiedDiff(path: string, before: Buffer | string | null, after: Buffer | string | null): string {
  if (same(before, after)) return '';
  const name = path.replace(/^\/+/, '');
  const a = before === null ? '/dev/null' : `a/${name}`;
  const b = after === null ? '/dev/null' : `b/${name}`;
  const oldText = before === null ? '' : asText(before);
  const newText = after === null ? '' : asText(after);
  if (oldText === undefined || newText === undefined) return `Binary files ${a} and ${b} differ\n`;
  const patch = createTwoFilesPatch(a, b, oldText, newText, undefined, undefined, { context: 3 });
  // createTwoFilesPatch starts with a line of "=" that git and patch(1) do not use.
  return patch.replace(/^=+\n/, '');
}
