/**
 * Secret values are replaced by *** in everything that leaves the engine: events, journal
 * lines, diffs. Masking works on the serialized text so nothing nested can slip through.
 */
import { quote } from '../transport/shell.js';

export class Masker {
  private readonly patterns: string[];

  constructor(secrets: Iterable<string>) {
    const set = new Set<string>();
    for (const s of secrets) {
      if (!s) continue;
      set.add(s);
      // The same value as it appears inside a JSON string (quotes, backslashes, newlines escaped),
      // and as the `quote` helper writes it into a shell command (and that inside JSON).
      set.add(JSON.stringify(s).slice(1, -1));
      const q = quote(s);
      set.add(q);
      set.add(JSON.stringify(q).slice(1, -1));
    }
    this.patterns = [...set].sort((a, b) => b.length - a.length);
  }

  text(s: string): string {
    let out = s;
    for (const p of this.patterns) out = out.split(p).join('***');
    return out;
  }

  /** Does the text hold a secret value? */
  holds(s: string): boolean {
    return this.patterns.some((p) => s.includes(p));
  }

  /** A deep copy of `v` with every secret masked. */
  value<T>(v: T): T {
    if (!this.patterns.length) return v;
    return JSON.parse(this.text(JSON.stringify(v))) as T;
  }
}
