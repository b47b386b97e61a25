/**
 * Secret values are replaced by *** in everything that leaves the engine: events, journal
 * lines, diffs, plan files. Structured values are masked before they are serialised — inside
 * each string value, never across JSON syntax — so no escaping on the way can hide a secret from
 * the mask, and a short secret cannot break a number, a timestamp or the JSON itself.
 */
import { quote } from '../shell/script.js';

/** Secrets (and lines of secrets) shorter than this also hide unrelated text when masked. */
export const MIN_SAFE_SECRET = 4;

/**
 * String fields hostsmith makes itself (identifiers, times, digests, names from the recipe and
 * inventory): they never carry a var's value, and masking a short secret inside them would
 * break the runs, steps and hosts they name.
 */
const STRUCTURAL = new Set([
  'time',
  'createdAt',
  'runId',
  'event',
  'kind',
  'status',
  'mode',
  'type',
  'host',
  'hosts',
  'step',
  'recipe',
  'recipeFile',
  'controller',
  'pre',
  'post',
  'sha256',
  'journalFile',
  'backupDir',
]);

/** A content digest as the journal records it (`sha256:<hex> (<n> bytes)`): nothing to hide. */
const DIGEST = /^sha256:[0-9a-f]{64}( \(\d+ bytes\))?$/;

/**
 * What to look for of one secret: the value as it is and trimmed at either end (output is
 * often trimmed), and each non-blank line of a multi-line value (a cut-off tail shows only some).
 */
export function secretPieces(secret: string): string[] {
  if (!secret) return [];
  // Output is trimmed at either end before it is shown (an error's text): every trimmed form counts.
  const pieces = new Set<string>([secret, secret.trimEnd(), secret.trimStart(), secret.trim()].filter((x) => x.trim() !== ''));
  if (!pieces.size) pieces.add(secret);
  if (/[\r\n]/.test(secret)) {
    for (const line of secret.split(/\r?\n|\r/)) {
      const t = line.trim();
      if (t) pieces.add(t);
    }
  }
  return [...pieces];
}

/** The ways a piece can appear in text: as is, inside shell single quotes, JSON-escaped (nested). */
function forms(piece: string): string[] {
  const out = new Set<string>();
  // As `quote` writes it into a command ('it'\''s', masked whole), and the inside of those
  // quotes, which is what appears within a longer quoted word ('PASSWORD=it'\''s').
  const quoted = quote(piece);
  const inner = quoted.startsWith("'") ? quoted.slice(1, -1) : quoted;
  for (const base of [piece, quoted, inner]) {
    let s = base;
    out.add(s);
    // A JSON text inside a string inside JSON…: three levels is more than any output has.
    for (let i = 0; i < 3; i++) {
      s = JSON.stringify(s).slice(1, -1);
      out.add(s);
    }
  }
  return [...out];
}

export class Masker {
  private readonly patterns: string[];

  constructor(secrets: Iterable<string>) {
    const set = new Set<string>();
    for (const s of secrets) for (const piece of secretPieces(s)) for (const f of forms(piece)) set.add(f);
    this.patterns = [...set].filter(Boolean).sort((a, b) => b.length - a.length);
  }

  /** Free text (a message, a command's output): every form of every secret becomes ***. */
  text(s: string): string {
    let out = s;
    for (const p of this.patterns) if (out.includes(p)) out = out.split(p).join('***');
    return out;
  }

  /** Does the text hold a secret value? */
  holds(s: string): boolean {
    return this.patterns.some((p) => s.includes(p));
  }

  /**
   * A deep copy of `v` with every secret masked inside its string values. Keys, numbers,
   * booleans and the structural fields hostsmith writes itself are left as they are, so the
   * result serialises to the same shape and still parses.
   */
  value<T>(v: T): T {
    if (!this.patterns.length) return v;
    return this.walk(v, undefined) as T;
  }

  private walk(v: unknown, key: string | undefined): unknown {
    if (typeof v === 'string') {
      if ((key !== undefined && STRUCTURAL.has(key)) || DIGEST.test(v)) return v;
      return this.text(v);
    }
    if (v === null || typeof v !== 'object') return v;
    // Whatever JSON.stringify would write for it (a Date, a Buffer) is what gets masked.
    const j = v as { toJSON?: () => unknown };
    if (typeof j.toJSON === 'function') return this.walk(j.toJSON(), key);
    // An array takes its key from where it is: `hosts: [names]` is as structural as `host: name`.
    if (Array.isArray(v)) return v.map((x) => this.walk(x, key));
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = this.walk(x, k);
    return out;
  }
}
