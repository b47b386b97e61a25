/**
 * Secret values are replaced by *** in everything that leaves the engine: events, journal
 * lines, diffs. Masking works on the serialized text so nothing nested can slip through.
 */
export class Masker {
  private readonly patterns: string[];

  constructor(secrets: Iterable<string>) {
    const set = new Set<string>();
    for (const s of secrets) {
      if (!s) continue;
      set.add(s);
      // The same value as it appears inside a JSON string (quotes, backslashes, newlines escaped).
      set.add(JSON.stringify(s).slice(1, -1));
    }
    this.patterns = [...set].sort((a, b) => b.length - a.length);
  }

  text(s: string): string {
    let out = s;
    for (const p of this.patterns) out = out.split(p).join('***');
    return out;
  }

  /** A deep copy of `v` with every secret masked. */
  value<T>(v: T): T {
    if (!this.patterns.length) return v;
    return JSON.parse(this.text(JSON.stringify(v))) as T;
  }
}
