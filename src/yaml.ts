/**
 * User files as text and YAML with positions, shared by recipes, vars files, templates, the
 * inventory and the config: every problem, down to a bad byte or an alias bomb, is an
 * InputIssue at file:line:col.
 */
import { relative, isAbsolute } from 'node:path';
import { isAlias, isCollection, isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, type Document, type Node as YamlNode, type Scalar } from 'yaml';
import type { InputIssue } from './errors.js';

// ---- problems located by a path into the YAML document ----

export type PathSeg = string | number;

/**
 * A problem at a path into a YAML value. `at` says which position to report: the value
 * itself, the key that holds it (unknown keys), or the map that lacks it (missing fields).
 */
export interface PathIssue {
  path: PathSeg[];
  message: string;
  at?: 'value' | 'key' | 'parent';
}

/** `steps[2].template.mode`; keys that are not plain words are quoted: `env["MY VAR"]`. */
export function formatPath(path: readonly PathSeg[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (/^[A-Za-z0-9_-]+$/.test(seg)) out += out ? `.${seg}` : seg;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out;
}

/** A file name for messages: relative to the working directory when it is below it. */
export function displayPath(file: string): string {
  const rel = relative(process.cwd(), file);
  return rel && !rel.startsWith('..') && !isAbsolute(rel) ? rel : file;
}

export interface LinePos {
  line: number;
  col: number;
}

// ---- bytes to text ----

/** Recipes, vars files, inventories and configs larger than this are refused unread. */
export const MAX_YAML_BYTES = 4 * 1024 * 1024;

// Strict: it throws rather than put U+FFFD for a byte that is not UTF-8. `ignoreBOM: false`
// (the default) drops a leading byte-order mark, as editors on Windows write one.
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });
const lenientUtf8 = new TextDecoder('utf-8', { ignoreBOM: true });

/**
 * Where the strict decoder stopped, found only after it threw: the text before the first invalid
 * byte (without a byte-order mark) and that byte's offset. The lenient decoder puts one U+FFFD at
 * each invalid sequence; a U+FFFD the file spells out (EF BF BD) is text, so it is skipped.
 */
function beforeInvalid(bytes: Uint8Array): { text: string; offset: number } {
  const all = lenientUtf8.decode(bytes);
  const bom = all.charCodeAt(0) === 0xfeff ? 1 : 0;
  let offset = 0;
  let from = 0;
  for (let i = all.indexOf('\ufffd'); i !== -1; i = all.indexOf('\ufffd', i + 1)) {
    offset += Buffer.byteLength(all.slice(from, i));
    from = i + 1;
    if (bytes[offset] !== 0xef || bytes[offset + 1] !== 0xbf || bytes[offset + 2] !== 0xbd) return { text: all.slice(bom, i), offset };
    offset += 3;
  }
  return { text: all.slice(bom), offset: bytes.length }; // not reached when the strict decoder threw
}

/** Where offset `index` of `text` is: 1-based line and column (columns count UTF-16 units, like the YAML positions). */
export function textPos(text: string, index: number): LinePos {
  let line = 1;
  let start = 0;
  for (let i = text.indexOf('\n'); i !== -1 && i < index; i = text.indexOf('\n', i + 1)) {
    line++;
    start = i + 1;
  }
  return { line, col: index - start + 1 };
}

// YAML allows tab, line feed, carriage return and printable characters (YAML 1.2 §5.1).
const YAML_CONTROL = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f\u0080-\u0084\u0086-\u009f\ufffe\uffff]/;
const NUL = /\u0000/;

const hex = (n: number) => `U+${n.toString(16).toUpperCase().padStart(4, '0')}`;

export interface DecodeOptions {
  /** What the file is, for messages: "recipe", "template", "inventory", ... */
  what: string;
  /** YAML files also refuse the control characters YAML does not allow. */
  yaml?: boolean;
  /** Larger files are refused (default: no limit). */
  maxBytes?: number;
}

/**
 * A file's bytes as text: UTF-8, a leading byte-order mark dropped. Bytes that are not UTF-8,
 * a NUL (or, in YAML, another control character) are refused at the place of the first one,
 * never replaced.
 */
export function decodeText(file: string, bytes: Uint8Array, o: DecodeOptions): { text: string } | { issue: InputIssue } {
  if (o.maxBytes !== undefined && bytes.length > o.maxBytes) {
    const mb = (o.maxBytes / 1024 / 1024).toFixed(0);
    return { issue: { file, line: 1, col: 1, message: `the ${o.what} is ${bytes.length} bytes, more than the ${mb} MB hostsmith reads; is it the right file?` } };
  }
  let text: string;
  let bad: number | undefined;
  try {
    text = strictUtf8.decode(bytes);
  } catch {
    // A UTF-16 byte-order mark is never UTF-8 either: say what the file is instead of which byte is wrong.
    if ((bytes[0] === 0xff && bytes[1] === 0xfe) || (bytes[0] === 0xfe && bytes[1] === 0xff)) {
      return { issue: { file, line: 1, col: 1, message: `the ${o.what} is UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8` } };
    }
    ({ text, offset: bad } = beforeInvalid(bytes));
  }
  const binary = bytes.includes(0) ? `; is this a binary file? The ${o.what} must be text` : '';
  const control = (o.yaml ? YAML_CONTROL : NUL).exec(text);
  if (control) {
    const code = control[0].charCodeAt(0);
    const what = code === 0 ? 'a NUL byte' : `control character ${hex(code)}`;
    const escape = code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
    const hint = binary || `; write it as an escape in a double-quoted string ("${escape}") or remove it`;
    return { issue: { file, ...textPos(text, control.index), message: `${what}${hint}` } };
  }
  if (bad !== undefined) {
    const seq = [...bytes.subarray(bad, bad + 4)].map((x) => x.toString(16).padStart(2, '0')).join(' ');
    const hint = binary || `; save the ${o.what} as UTF-8${o.what === 'template' ? ' (a `file` step copies binary files as they are)' : ''}`;
    return {
      issue: { file, ...textPos(text, text.length), message: `not UTF-8: byte 0x${bytes[bad]!.toString(16).padStart(2, '0')} (in ${seq}) cannot be decoded${hint}` },
    };
  }
  return { text };
}

// ---- YAML with positions ----

/** Nesting deeper than this is refused (real files stay well below 20). */
export const MAX_YAML_DEPTH = 100;
/** How many values aliases may add to a document, all together (an "alias bomb" adds billions). */
export const MAX_ALIAS_VALUES = 10_000;

// Tags that name what plain YAML already is; others (!!binary, !!set, !custom) are refused.
const CORE_TAGS = new Set(['str', 'int', 'float', 'bool', 'null', 'map', 'seq'].map((t) => `tag:yaml.org,2002:${t}`));

const kindOf = (n: unknown) => (isMap(n) ? 'a map' : isSeq(n) ? 'a list' : 'a value');

/** A YAML file parsed with positions kept, so every problem can be reported as file:line:col. */
export class YamlSource {
  readonly doc: Document;
  readonly value: unknown;
  /** YAML problems (syntax, duplicate keys, aliases, tags); when there are any, `value` is not worth validating. */
  readonly errors: InputIssue[];
  private readonly lines = new LineCounter();

  constructor(
    /** The file name as shown in messages. */
    readonly file: string,
    private readonly text: string,
  ) {
    // uniqueKeys stays off: checkNodes finds duplicate keys itself. The library's check compares
    // each key with every earlier one (50,000 keys in one map took 24 s here, against 0.7 s
    // without it), and it lets `1:` and `"1":`, or `*k :` and the key *k names, through although
    // they become one key in the value, the later silently winning.
    this.doc = parseDocument(text, { lineCounter: this.lines, prettyErrors: false, merge: true, uniqueKeys: false });
    this.errors = [...this.doc.errors, ...this.doc.warnings].map((e) => ({
      file,
      ...this.lines.linePos(e.pos[0]),
      // The parser turns a stack overflow on absurd nesting into an error of its own.
      message: `invalid YAML: ${/call stack/i.test(e.message) ? 'nested too deeply to read' : e.message.split('\n')[0]}`,
    }));
    if (!this.errors.length) this.errors.push(...this.checkNodes());
    this.value = undefined;
    if (this.errors.length) return;
    try {
      // The library's own limit stays off: checkNodes bounds what aliases add, by size and at the
      // alias. maxAliasCount counts uses of an anchor, not the values behind it (an anchor of
      // 100,000 items used 100 times passes), and it throws without a place.
      this.value = this.doc.toJS({ maxAliasCount: -1 });
    } catch (e) {
      this.errors.push({ file, line: 1, col: 1, message: `invalid YAML: ${e instanceof Error ? e.message : String(e)}` });
    }
  }

  private at(n: { range?: [number, number, number] | null } | null | undefined): LinePos {
    return n?.range ? this.lines.linePos(n.range[0]) : { line: 1, col: 1 };
  }

  /**
   * What the parser lets through but hostsmith refuses, each at its place: duplicate keys,
   * aliases to no anchor or to a node that contains them, alias bombs, lists or maps as keys,
   * merges of non-maps, unknown tags and nesting too deep.
   */
  private checkNodes(): InputIssue[] {
    const issues: InputIssue[] = [];
    const report = (n: YamlNode | null | undefined, message: string) => issues.push({ file: this.file, ...this.at(n), message: `invalid YAML: ${message}` });
    const sizes = new Map<YamlNode, { size: number; depth: number }>();
    const open = new Set<YamlNode>();
    let viaAliases = 0;
    let bombed = false;

    const measure = (n: unknown, depth: number): { size: number; depth: number } => {
      if (isAlias(n)) {
        const target = n.resolve(this.doc) as YamlNode | undefined;
        if (!target) {
          report(n, `alias *${n.source} refers to no anchor (an anchor &${n.source} must come before it)`);
          return { size: 1, depth: 1 };
        }
        if (open.has(target)) {
          report(n, `alias *${n.source} is inside the value its anchor names, which would never end`);
          return { size: 1, depth: 1 };
        }
        const m = sizes.get(target) ?? measure(target, depth);
        viaAliases += m.size;
        if (!bombed && viaAliases > MAX_ALIAS_VALUES) {
          bombed = true;
          report(n, `aliases expand to more than ${MAX_ALIAS_VALUES} values from alias *${n.source} on; is this an alias bomb?`);
        }
        return m;
      }
      if (!n || typeof n !== 'object') return { size: 1, depth: 1 };
      const node = n as YamlNode;
      const known = sizes.get(node);
      if (known) return known;
      if (node.tag && !CORE_TAGS.has(node.tag)) report(node, `tag ${node.tag.replace('tag:yaml.org,2002:', '!!')} is not supported; write the value without a tag`);
      if (!isCollection(node)) return { size: 1, depth: 1 };
      if (depth > MAX_YAML_DEPTH) {
        report(node, `nested more than ${MAX_YAML_DEPTH} levels deep`);
        const m = { size: 1, depth: 1 };
        sizes.set(node, m);
        return m;
      }
      open.add(node);
      let size = 1;
      let deepest = 0;
      const add = (m: { size: number; depth: number }) => {
        size += m.size;
        deepest = Math.max(deepest, m.depth);
      };
      const keys = new Map<string, YamlNode>();
      for (const item of node.items) {
        if (!isPair(item)) {
          add(measure(item, depth + 1));
          continue;
        }
        const key = item.key as YamlNode | null;
        if (isCollection(key) || (isAlias(key) && isCollection(key.resolve(this.doc)))) {
          report(key, `a key must be a plain value, not ${kindOf(isAlias(key) ? key.resolve(this.doc) : key)}`);
        } else if (isMap(node) && (isScalar(key) || key === null || isScalar(isAlias(key) ? key.resolve(this.doc) : undefined))) {
          // An alias as a key stands for its scalar: `*k: 1` and `name: 1` clash when *k is "name".
          const k = isAlias(key) ? (key.resolve(this.doc) as Scalar) : (key as Scalar | null);
          const merge = typeof k?.value === 'symbol';
          const name = k === null || k.value === null ? '' : merge ? '<<' : String(k.value);
          const first = keys.get(name);
          if (first !== undefined) report(key, `duplicate key ${JSON.stringify(name)} (first at line ${this.at(first).line})`);
          else if (key) keys.set(name, key);
          if (merge) {
            const v = item.value;
            const sources = isSeq(v) ? v.items : [v];
            for (const s of sources) {
              const r = isAlias(s) ? s.resolve(this.doc) : s;
              if (r !== undefined && !isMap(r)) report((s ?? key) as YamlNode, `a merge (<<) takes a map or an alias to one, not ${kindOf(r)}`);
            }
          }
        }
        if (key) add(measure(key, depth + 1));
        add(measure(item.value, depth + 1));
      }
      open.delete(node);
      const m = { size, depth: deepest + 1 };
      if (m.depth > MAX_YAML_DEPTH && depth <= MAX_YAML_DEPTH) {
        // Aliases can nest deeper than the text shows.
        if (!issues.some((i) => i.message.includes('levels deep'))) report(node, `nested more than ${MAX_YAML_DEPTH} levels deep (through aliases)`);
      }
      sizes.set(node, m);
      return m;
    };
    try {
      measure(this.doc.contents, 1);
    } catch (e) {
      if (!(e instanceof RangeError)) throw e;
      issues.push({ file: this.file, line: 1, col: 1, message: `invalid YAML: nested too deeply to read` });
    }
    return issues;
  }

  private resolve(n: unknown): unknown {
    return isAlias(n) ? n.resolve(this.doc) : n;
  }

  /** The deepest node along `path`, how many segments matched, and the key node that led to it. */
  private locate(path: readonly PathSeg[]): { node: YamlNode | null; key: YamlNode | null; depth: number } {
    let node = this.resolve(this.doc.contents) as YamlNode | null;
    let key: YamlNode | null = null;
    let depth = 0;
    for (const seg of path) {
      let next: unknown;
      let nextKey: YamlNode | null = null;
      if (isMap(node)) {
        const pair = node.items.find((p) => isPair(p) && String(isScalar(p.key) ? p.key.value : p.key) === String(seg));
        if (!pair) break;
        next = pair.value;
        nextKey = pair.key as YamlNode;
      } else if (isSeq(node) && typeof seg === 'number' && seg < node.items.length) {
        next = node.items[seg];
      } else break;
      depth++;
      key = nextKey;
      node = (this.resolve(next) as YamlNode | null) ?? null;
      if (!node) break;
    }
    return { node, key, depth };
  }

  private start(n: YamlNode | null | undefined): LinePos | undefined {
    return n?.range ? this.lines.linePos(n.range[0]) : undefined;
  }

  pos(path: readonly PathSeg[], at: PathIssue['at'] = 'value'): LinePos {
    if (at === 'parent') return this.pos(path.slice(0, -1), 'key');
    const { node, key, depth } = this.locate(path);
    const complete = depth === path.length;
    const first = complete && at === 'value' ? (this.start(node) ?? this.start(key)) : (this.start(key) ?? this.start(node));
    return first ?? { line: 1, col: 1 };
  }

  issue(p: PathIssue): InputIssue {
    return { file: this.file, ...this.pos(p.path, p.at), path: formatPath(p.path), message: p.message };
  }

  /**
   * Where a position inside a string value (1-based line, 0-based column, as Handlebars gives
   * them) is in the file. Exact for one-line plain/quoted strings and literal blocks (`|`);
   * otherwise the string's own start.
   */
  posInString(path: readonly PathSeg[], line: number, column: number): LinePos {
    const { node, depth } = this.locate(path);
    if (depth !== path.length || !isScalar(node) || !node.range || typeof node.value !== 'string') return this.pos(path);
    const src = this.text.slice(node.range[0], node.range[1]);
    const value = node.value;
    if (node.type === 'PLAIN' || node.type === 'QUOTE_SINGLE' || node.type === 'QUOTE_DOUBLE') {
      const quoted = node.type !== 'PLAIN';
      const raw = quoted ? src.slice(1, -1) : src;
      if (line === 1 && raw === value && !value.includes('\n')) return this.lines.linePos(node.range[0] + (quoted ? 1 : 0) + column);
    } else if (node.type === 'BLOCK_LITERAL') {
      const lines = src.split('\n');
      const content = lines.slice(1);
      const indent = Math.min(...content.filter((l) => l.trim()).map((l) => l.length - l.trimStart().length));
      if (line <= content.length && Number.isFinite(indent)) {
        let offset = node.range[0] + lines[0]!.length + 1;
        for (let i = 0; i < line - 1; i++) offset += content[i]!.length + 1;
        return this.lines.linePos(offset + indent + column);
      }
    }
    return this.pos(path);
  }
}

/**
 * A YAML file's bytes read with positions: the source, or the issues that stop it being read
 * (bad bytes, too large, YAML errors).
 */
export function yamlSource(file: string, bytes: Uint8Array, what: string): { src: YamlSource } | { issues: InputIssue[] } {
  const d = decodeText(file, bytes, { what, yaml: true, maxBytes: MAX_YAML_BYTES });
  if ('issue' in d) return { issues: [d.issue] };
  const src = new YamlSource(file, d.text);
  return src.errors.length ? { issues: src.errors } : { src };
}

// ---- where a value came from, for values that travel far from their file ----

type Place = Omit<InputIssue, 'message'>;
const places = new WeakMap<object, Map<string, Place>>();

/** Remembers where each key of `obj` was written (vars merged from an inventory, a recipe's vars). */
export function notePlaces(obj: object, entries: Iterable<[string, Place]>): void {
  const m = places.get(obj) ?? new Map<string, Place>();
  for (const [k, p] of entries) m.set(k, p);
  places.set(obj, m);
}

/** Where `obj[key]` was written, when notePlaces recorded it. */
export function placeOf(obj: object | undefined, key: string): Place | undefined {
  return obj ? places.get(obj)?.get(key) : undefined;
}
