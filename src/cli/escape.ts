/**
 * Text that came from a host, a journal or a file (lock owners, stderr, summaries, diffs) is shown
 * to a person only through `escapeText`, so it cannot drive the terminal: control characters
 * (C0 incl. ESC and CR, DEL, C1) and the invisible characters that reorder or break lines (bidi
 * overrides and isolates, U+2028/U+2029) become visible escapes such as `\x1b`, `\r`, `\u202e`.
 * Newlines are kept only where the text is meant to span lines (`multiline`: diffs, errors); tabs
 * are kept unless they would shift the columns of a table (`tabs: false`).
 *
 * Backslashes are left as they are, so paths and scripts stay readable: a literal `\x1b` in the
 * text looks like an escaped ESC byte, which is harmless.
 *
 * JSON output needs none of this: JSON.stringify writes every C0 character (ESC included) as
 * `\uXXXX`.
 */

// C0 except tab (and newline, handled apart), DEL, C1, ALM, LRM/RLM, LS/PS, LRE…RLO, LRI…PDI.
const UNSAFE = /[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

function visible(c: string): string {
  if (c === '\r') return '\\r';
  if (c === '\n') return '\\n';
  if (c === '\t') return '\\t';
  const n = c.charCodeAt(0);
  return n <= 0xff ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u${n.toString(16).padStart(4, '0')}`;
}

const UNSAFE_OR_TAB = /[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

export function escapeText(text: string, o: { multiline?: boolean; tabs?: boolean } = {}): string {
  return text.replace(o.tabs === false ? UNSAFE_OR_TAB : UNSAFE, (c) => (c === '\n' && o.multiline ? c : visible(c)));
}
