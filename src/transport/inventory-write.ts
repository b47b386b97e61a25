/**
 * Adds a host to an inventory file the way a person would: the file's comments, order and
 * style stay as they are (yaml's Document API edits the parsed document in place); only the
 * new entry is added at the end of `hosts:`. A missing file is created.
 */
import { randomBytes } from 'node:crypto';
import { chmod, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { Document, isMap, isScalar, parseDocument, type Scalar, type YAMLMap } from 'yaml';
import { InputError, errorMessage } from '../errors.js';
import { decodeText, displayPath } from '../yaml.js';
import { loadInventory } from './targets.js';

/** What the inventory says about one host (SPEC §6); fields left out fall back to `defaults:`. */
export interface InventoryHostEntry {
  address: string;
  port?: number;
  user?: string;
  identity?: string;
  sudo?: boolean;
  /** The host's own vars (what bootstrap was told for it). */
  vars?: Record<string, unknown>;
}

async function readIfThere(file: string): Promise<string | undefined> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new InputError([{ file: displayPath(file), message: `cannot read inventory: ${errorMessage(e)}` }]);
  }
  // Strictly, as every input is read: a lossy read would write replacement characters back into it.
  const decoded = decodeText(displayPath(file), bytes, { what: 'inventory', yaml: true });
  if ('issue' in decoded) throw new InputError([decoded.issue]);
  return decoded.text;
}

/** Whether the existing host entries are written as flow maps (`web1: { address: … }`); new ones follow suit. */
function usesFlowEntries(hosts: YAMLMap): boolean {
  const first = hosts.items.find((p) => isMap(p.value));
  return first ? Boolean((first.value as YAMLMap).flow) : true;
}

function isEmptyValue(n: unknown): boolean {
  return n === undefined || n === null || (isScalar(n) && (n.value === null || n.value === undefined));
}

/** `name: { … }` (or a block entry) as YAML text, each line indented by `indent` spaces. */
function entryText(name: string, entry: Record<string, unknown>, flow: boolean, indent: number): string {
  const doc = new Document({ [name]: entry });
  const map = doc.contents as YAMLMap;
  const value = map.items[0]!.value as YAMLMap;
  value.flow = flow;
  const pad = ' '.repeat(indent);
  return doc
    .toString({ indent: 2, flowCollectionPadding: true, lineWidth: 0 })
    .trimEnd()
    .split('\n')
    .map((l) => pad + l)
    .join('\n')
    .concat('\n');
}

function column(text: string, offset: number): number {
  return offset - (text.lastIndexOf('\n', offset - 1) + 1);
}

/** Where a line ends (just past its newline), or the text's end. */
function afterLine(text: string, offset: number): number {
  const nl = text.indexOf('\n', offset);
  return nl === -1 ? text.length : nl + 1;
}

/**
 * The text with the new entry spliced in, every other byte as it was; undefined when the layout
 * is one this does not splice (flow maps at the top, or hosts written inline).
 */
function spliced(text: string, doc: Document, name: string, entry: Record<string, unknown>): string | undefined {
  const top = doc.contents;
  if (!isMap(top) || top.flow) return undefined;
  const pair = top.items.find((p) => isScalar(p.key) && p.key.value === 'hosts');
  const withNl = (t: string) => (t && !t.endsWith('\n') ? `${t}\n` : t);
  if (!pair) {
    const keyCol = top.items[0] && isScalar(top.items[0].key) && top.items[0].key.range ? column(text, top.items[0].key.range[0]) : 0;
    const pad = ' '.repeat(keyCol);
    return `${withNl(text)}${pad}hosts:\n${entryText(name, entry, true, keyCol + 2)}`;
  }
  const key = pair.key as Scalar;
  if (!key.range) return undefined;
  const keyCol = column(text, key.range[0]);
  const hosts = pair.value;
  if (isEmptyValue(hosts) || (isMap(hosts) && hosts.flow && hosts.items.length === 0)) {
    // `hosts:`, `hosts: ~` or `hosts: {}`: the value goes, the entry follows on its own line.
    const node = hosts as Scalar | YAMLMap | null;
    const cut = node?.range ? [node.range[0], node.range[1]] : [key.range[1], key.range[1]];
    const lineEnd = afterLine(text, cut[1]!);
    const rest = text.slice(cut[1]!, lineEnd).replace(/^[ \t]*:?/, '');
    const head = text.slice(0, cut[0]).replace(/[ \t]*$/, '');
    const colon = head.endsWith(':') ? '' : ':';
    return `${head}${colon}${rest.trimEnd() ? ` ${rest.trim()}` : ''}\n${entryText(name, entry, true, keyCol + 2)}${text.slice(lineEnd)}`;
  }
  if (!isMap(hosts) || hosts.flow || !hosts.items.length) return undefined;
  const first = hosts.items[0]!.key as Scalar;
  const last = hosts.items[hosts.items.length - 1]!;
  const lastEnd = (last.value as Scalar | YAMLMap | null)?.range?.[1] ?? (last.key as Scalar).range?.[1];
  if (!first.range || lastEnd === undefined) return undefined;
  // Block values end where their last line does; a scalar or flow value ends mid-line (a comment may follow).
  const at = text[lastEnd - 1] === '\n' ? lastEnd : afterLine(text, lastEnd);
  const before = text.slice(0, at);
  return `${withNl(before)}${entryText(name, entry, usesFlowEntries(hosts), column(text, first.range[0]))}${text.slice(at)}`;
}

/**
 * The inventory text with `name` added under `hosts:`. Throws when the text is not YAML with a
 * map at the top, when `hosts` is not a map, or when the name is already taken. Every other
 * line is kept byte for byte where the layout allows (block maps, as inventories are written);
 * otherwise the document is re-written by the yaml library, which keeps comments and order.
 */
export function addHostToInventoryText(text: string | undefined, name: string, entry: InventoryHostEntry, shownFile = 'inventory'): string {
  const src = text ?? '';
  const doc = parseDocument(src);
  if (doc.errors.length) throw new InputError([{ file: shownFile, message: `not valid YAML, so the host was not added: ${doc.errors[0]!.message}` }]);
  if (isEmptyValue(doc.contents)) doc.contents = doc.createNode({}) as never;
  if (!isMap(doc.contents)) throw new InputError([{ file: shownFile, message: 'the inventory is not a map of defaults/hosts/groups, so the host was not added' }]);
  const existing = doc.get('hosts', true);
  if (!isEmptyValue(existing) && !isMap(existing)) throw new InputError([{ file: shownFile, message: '`hosts:` is not a map, so the host was not added' }]);
  if (isMap(existing) && existing.has(name)) throw new InputError([{ file: shownFile, message: `a host named "${name}" is already in the inventory; choose another name` }]);
  const clean: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(entry)) if (v !== undefined) clean[k] = v;

  const want = { ...(doc.toJS() as Record<string, unknown>) };
  want.hosts = { ...((want.hosts as Record<string, unknown> | null) ?? {}), [name]: clean };
  const candidate = spliced(src, doc, name, clean);
  if (candidate !== undefined) {
    const back = parseDocument(candidate);
    if (!back.errors.length && isDeepStrictEqual(back.toJS(), want)) return candidate;
  }
  // Fallback: edit the document itself (comments and order kept; spacing may be normalised).
  let hosts = doc.get('hosts', true);
  if (!isMap(hosts)) {
    hosts = doc.createNode({});
    doc.set('hosts', hosts);
  }
  const map = hosts as YAMLMap;
  const node = doc.createNode(clean) as YAMLMap;
  node.flow = usesFlowEntries(map);
  if (map.items.length === 0) map.flow = false;
  map.add(doc.createPair(name, node));
  return doc.toString();
}

/**
 * Adds the host to the inventory file (created when missing), keeping everything else in it.
 * The result is read back with the inventory schema before it replaces the file, atomically and
 * with the file's mode kept.
 */
export async function addHostToInventory(file: string, name: string, entry: InventoryHostEntry): Promise<{ created: boolean }> {
  const shown = displayPath(file);
  const before = await readIfThere(file);
  const after = addHostToInventoryText(before, name, entry, shown);
  const tmp = join(dirname(file), `.${basename(file)}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    const mode = before === undefined ? 0o644 : (await stat(file)).mode & 0o7777;
    await writeFile(tmp, after, { mode, flag: 'wx' });
    await chmod(tmp, mode);
    // Never leave an inventory hostsmith itself cannot read.
    await loadInventory(tmp);
    await rename(tmp, file);
  } catch (e) {
    await unlink(tmp).catch(() => {});
    if (e instanceof InputError) throw e;
    throw new InputError([{ file: shown, message: `cannot write the inventory: ${errorMessage(e)}` }]);
  }
  return { created: before === undefined };
}
