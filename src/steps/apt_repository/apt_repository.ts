/**
 * `apt_repository`: a third-party apt source as Debian now recommends one — a deb822 file in
 * /etc/apt/sources.list.d/<name>.sources whose Signed-By names a key of its own in
 * /etc/apt/keyrings (never apt's global trusted.gpg.d, so the key vouches for this source alone).
 *
 * Three paths go through file-state.ts (guarded writes, root-only backups, no writing through a
 * planted link), each planned on its own: the .sources file, the key in the form given (.asc when
 * armored, .gpg when binary: apt tells them apart by the extension) and the key in the other form,
 * removed, so a source whose key changed form does not leave a stale key behind. With
 * update_cache, a change is followed by an `apt-get update` of this source alone; when that fails
 * (a wrong key, a URI the host cannot reach) the step puts its files back itself before it fails,
 * since the engine rolls back completed steps only.
 *
 * apt's lists are cache, but not inert: lists left behind for a source that is gone would keep
 * apt offering its packages until the next full update. So a rollback (and state: absent) deletes
 * the list files named after this source's URIs and suites — unless a source apt still has after
 * the rollback names the same ones (apt-get indextargets), whose cache they then are. Rollback
 * does not download anything: restoring an older version of the source leaves its lists as they
 * were, and the next `apt-get update` refreshes them.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { InputError, StepError } from '../../errors.js';
import { quote } from '../../shell/script.js';
import { withSafePath } from '../../shell/safe-path.js';
import { flag } from '../accounts.js';
import { applyPath, checkPath, pathKey, pathUndoSummary, pathWrote, planPath, rollbackPath, rollbackPathScript, type FileUndo, type PathState, type Wanted } from '../file-state.js';
import { APT_ENV, LOCK_TIMEOUT_S } from '../package/apt.js';
import { applyParts, partsUndoMismatch, rollbackParts, rollbackPartsScript, textOf, type Part } from '../path-parts.js';
import { runOk, type Plan, type PlanEnv, type StaticProblem, type StepContext, type StepType } from '../step.js';
import { str, type UndoData } from '../undo-text.js';

export const SOURCES_DIR = '/etc/apt/sources.list.d';
export const KEYRINGS_DIR = '/etc/apt/keyrings';
export const LISTS_DIR = '/var/lib/apt/lists';

const listOf = <T extends z.ZodTypeAny>(item: T) => z.union([item.transform((s) => [s] as string[]), z.array(item).min(1)]);

/** A URI apt can fetch from: a scheme, then no blank (a deb822 field separates URIs by blanks). */
const uri = z.string().regex(/^[a-z][a-z0-9+.-]*:\/\/[^\s#]+$/, 'a URI such as https://download.docker.com/linux/debian (no blanks)');
/** A suite (bookworm) or, for a flat repository, a path ending in / (./). */
const suite = z.string().regex(/^[A-Za-z0-9._~+/-]+$/, 'a suite such as bookworm, or a path ending in / for a flat repository');
const component = z.string().regex(/^[A-Za-z0-9._+-]+(\/[A-Za-z0-9._+-]+)*$/, 'a component such as main or stable');
const arch = z.string().regex(/^[a-z0-9-]+$/, 'a Debian architecture such as amd64');

export const aptRepositorySchema = z
  .object({
    /** The file stem: <name>.sources and <name>.asc / <name>.gpg. */
    name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/, 'a file stem of letters, digits, _ . and - (apt ignores other names in sources.list.d)'),
    uris: listOf(uri).optional(),
    suites: listOf(suite).optional(),
    components: listOf(component).optional(),
    architectures: listOf(arch).optional(),
    key: z.union([z.object({ file: z.string().min(1) }).strict(), z.object({ content: z.string().min(1) }).strict()]).optional(),
    state: z.enum(['present', 'absent']).default('present'),
    update_cache: flag.default(false),
  })
  .strict()
  .superRefine((p, ctx) => {
    const issue = (path: string, message: string) => ctx.addIssue({ code: z.ZodIssueCode.custom, path: [path], message });
    if (p.state === 'present') {
      if (!p.uris) issue('uris', 'a repository needs uris');
      if (!p.suites) issue('suites', 'a repository needs suites');
      if (!p.key) issue('key', 'a repository needs its signing key: key: { file: … } or key: { content: … }');
      const flat = (p.suites ?? []).filter((s) => s.endsWith('/'));
      if (flat.length && p.components) issue('components', `a flat repository (suite ${flat[0]}) has no components`);
      if (flat.length && flat.length < (p.suites ?? []).length) issue('suites', 'flat suites (ending in /) and named ones cannot share one entry');
      if (!flat.length && p.suites && !p.components) issue('components', 'a repository with named suites needs components (flat repositories, whose suite ends in /, have none)');
    }
    if (p.state === 'absent' && p.update_cache) issue('update_cache', 'update_cache is for state: present (state: absent removes the lists of the source it removes)');
  });

export type AptRepositoryParams = z.output<typeof aptRepositorySchema> & {
  /** The bytes of key.file, read at prepare (base64), as the journal records them. */
  resolvedKey?: string;
};

export interface AptRepositoryState {
  sources: PathState;
  asc: PathState;
  gpg: PathState;
}

export interface AptRepositoryUndo {
  name: string;
  sources: FileUndo | null;
  asc: FileUndo | null;
  gpg: FileUndo | null;
  /** List-file name prefixes (in /var/lib/apt/lists) of the source as the step left it: dropped on rollback when no source uses them. */
  lists: string[];
}

export const sourcesPath = (name: string) => `${SOURCES_DIR}/${name}.sources`;
export const keyPath = (name: string, form: 'asc' | 'gpg') => `${KEYRINGS_DIR}/${name}.${form}`;

const ARMOR = '-----BEGIN PGP PUBLIC KEY BLOCK-----';

/** The key's bytes as given: key.content as UTF-8, key.file as read at prepare. */
export function keyBytes(p: AptRepositoryParams): Buffer {
  if (p.key && 'content' in p.key) return Buffer.from(p.key.content, 'utf8');
  if (p.resolvedKey !== undefined) return Buffer.from(p.resolvedKey, 'base64');
  throw new StepError(`the key file ${p.key?.file ?? '?'} was not read (prepare did not run)`);
}

/** apt picks the parser by extension: .asc for an armored key, .gpg for a binary keyring. */
export function keyForm(key: Buffer): 'asc' | 'gpg' {
  if (key.toString('latin1').trimStart().startsWith(ARMOR)) return 'asc';
  // A binary OpenPGP key starts with a packet tag: its high bit is always set.
  if (key.length && (key[0]! & 0x80) !== 0) return 'gpg';
  throw new StepError('the key is neither an armored OpenPGP public key (-----BEGIN PGP PUBLIC KEY BLOCK-----) nor a binary one');
}

/** The deb822 stanza, its fields in the order apt's own documentation lists them. */
export function renderSources(p: AptRepositoryParams, signedBy: string): string {
  const fields: Array<[string, string[] | undefined]> = [
    ['Types', ['deb']],
    ['URIs', p.uris],
    ['Suites', p.suites],
    ['Components', p.components],
    ['Architectures', p.architectures],
    ['Signed-By', [signedBy]],
  ];
  return fields
    .filter((f): f is [string, string[]] => !!f[1]?.length)
    .map(([k, v]) => `${k}: ${v.join(' ')}\n`)
    .join('');
}

/** apt's QuoteString for URItoFileName: these, blanks and non-ASCII become %xx. */
const FILENAME_BAD = '\\|{}[]<>"^~_=!@#$%^&*';
const quoteForFile = (s: string) =>
  [...Buffer.from(s, 'utf8')].map((b) => (b <= 0x20 || b >= 0x7f || FILENAME_BAD.includes(String.fromCharCode(b)) ? `%${b.toString(16).padStart(2, '0')}` : String.fromCharCode(b))).join('');

/**
 * The name prefix of the list files apt-get update keeps for one URI and suite (apt's
 * URItoFileName: no scheme, no credentials, quoted, / as _): `deb.debian.org_debian_dists_bookworm_`.
 */
export function listPrefix(u: string, s: string): string {
  const rest = u.replace(/^[a-z][a-z0-9+.-]*:\/\//, '').replace(/^[^/@]*@/, '');
  const base = rest.replace(/\/+$/, '');
  const path = s.endsWith('/') ? `${base}/${s.replace(/^\.\/?/, '')}` : `${base}/dists/${s}/`;
  return quoteForFile(path.replace(/\/+$/, '/')).replace(/\//g, '_');
}

/** Every (URI, suite) prefix of a source's lists. */
export const listPrefixes = (uris: string[], suites: string[]): string[] => [...new Set(uris.flatMap((u) => suites.map((s) => listPrefix(u, s))))];

/** A prefix safe to glob in /var/lib/apt/lists: no /, no blank, no quote, no glob character. */
const PREFIX_OK = /^[A-Za-z0-9%._:+,;-]+_$/;

/** URIs and Suites of a deb822 file as the host has it (what state: absent drops the lists of). */
export function parseSources(text: string): { uris: string[]; suites: string[] } {
  const out = { uris: [] as string[], suites: [] as string[] };
  for (const line of text.split('\n')) {
    const m = /^(URIs|Suites):\s*(.*)$/i.exec(line.trim());
    if (!m) continue;
    const vals = m[2]!.split(/\s+/).filter(Boolean);
    (m[1]!.toLowerCase() === 'uris' ? out.uris : out.suites).push(...vals);
  }
  out.uris = out.uris.filter((u) => uri.safeParse(u).success);
  out.suites = out.suites.filter((s) => suite.safeParse(s).success);
  return out;
}

/** What each of the three paths should be, from the params alone. */
function wantedOf(p: AptRepositoryParams): { sources: Wanted; asc: Wanted; gpg: Wanted; key?: Buffer } {
  const meta = { mode: 0o644, owner: 'root', group: 'root' } as const;
  if (p.state === 'absent') {
    return { sources: { path: sourcesPath(p.name), state: 'absent' }, asc: { path: keyPath(p.name, 'asc'), state: 'absent' }, gpg: { path: keyPath(p.name, 'gpg'), state: 'absent' } };
  }
  const key = keyBytes(p);
  const form = keyForm(key);
  const other = form === 'asc' ? 'gpg' : 'asc';
  const w = {
    sources: { path: sourcesPath(p.name), state: 'present', content: Buffer.from(renderSources(p, keyPath(p.name, form)), 'utf8'), ...meta },
    [form]: { path: keyPath(p.name, form), state: 'present', content: key, ...meta },
    [other]: { path: keyPath(p.name, other), state: 'absent' },
  } as { sources: Wanted; asc: Wanted; gpg: Wanted };
  return { ...w, key };
}

/** A fingerprint-free line about a key: its size, form and sha256 (a key's bytes mean nothing in a diff). */
export function keyText(key: Buffer): string {
  const form = key.toString('latin1').trimStart().startsWith(ARMOR) ? 'armored' : 'binary';
  const size = key.length < 1024 ? `${key.length} bytes` : `${(key.length / 1024).toFixed(1)} KB`;
  return `key: ${size} ${form}, sha256 ${createHash('sha256').update(key).digest('hex').slice(0, 16)}…`;
}

/** The key's change as a small diff of summary lines, not of its bytes. */
function keyDiff(path: string, before: Buffer | null, after: Buffer | null): string {
  const name = path.replace(/^\/+/, '');
  return [`--- ${before ? `a/${name}` : '/dev/null'}`, `+++ ${after ? `b/${name}` : '/dev/null'}`, '@@ key @@', ...(before ? [`-${keyText(before)}`] : []), ...(after ? [`+${keyText(after)}`] : [])]
    .map((l) => `${l}\n`)
    .join('');
}

interface FilePart {
  key: 'sources' | 'asc' | 'gpg';
  wanted: Wanted;
  plan: Plan<FileUndo>;
}

function fileParts(p: AptRepositoryParams, s: AptRepositoryState, env: PlanEnv): FilePart[] {
  const w = wantedOf(p);
  const out: FilePart[] = [];
  for (const key of ['sources', 'asc', 'gpg'] as const) {
    const state = s[key];
    // A key is read as it is: any regular file there is a key apt may use (its content is not text).
    if (key === 'sources') textOf(w.sources.path, state);
    const plan = planPath(w[key], state, env);
    if (plan.changed) out.push({ key, wanted: w[key], plan });
  }
  return out;
}

function contentOf(s: PathState): Buffer | null {
  return s.kind === 'file' ? (s.content ?? Buffer.alloc(0)) : null;
}

/** The list prefixes the step's source has once applied (present: its params; absent: what the host's file named). */
function listsOf(p: AptRepositoryParams, s: AptRepositoryState): string[] {
  if (p.state === 'present') return listPrefixes(p.uris ?? [], p.suites ?? []);
  const had = s.sources.kind === 'file' ? parseSources((s.sources.content ?? Buffer.alloc(0)).toString('utf8')) : { uris: [], suites: [] };
  return listPrefixes([...had.uris, ...(p.uris ?? [])], [...had.suites, ...(p.suites ?? [])]).filter((x) => PREFIX_OK.test(x));
}

export function planAptRepository(p: AptRepositoryParams, s: AptRepositoryState, env: PlanEnv): Plan<AptRepositoryUndo> {
  const parts = fileParts(p, s, env);
  const src = sourcesPath(p.name);
  if (!parts.length) {
    return {
      changed: false,
      summary: p.state === 'present' ? `apt source ${p.name} is as wanted (${src}; ${keyText(keyBytes(p))})` : `apt source ${p.name} is absent`,
      undo: null,
    };
  }
  const what: string[] = [];
  const diffs: string[] = [];
  for (const part of parts) {
    const path = part.wanted.path;
    if (part.key === 'sources') {
      what.push(part.plan.summary);
      if (part.plan.diff) diffs.push(part.plan.diff);
      continue;
    }
    const before = contentOf(s[part.key]);
    const after = part.wanted.state === 'present' ? part.wanted.content! : null;
    if (before && after && before.equals(after)) {
      what.push(part.plan.summary); // the same key: only its mode or owner moves
      continue;
    }
    what.push(after ? `${before ? 'replace' : 'write'} key ${path} (${keyText(after).slice(5)})` : `remove key ${path}`);
    diffs.push(keyDiff(path, before, after));
  }
  const refresh = p.state === 'present' && p.update_cache ? `, then apt-get update for ${p.name} alone` : '';
  const drop = p.state === 'absent' ? ', and drop its apt lists' : '';
  const undo: AptRepositoryUndo = { name: p.name, sources: null, asc: null, gpg: null, lists: listsOf(p, s) };
  for (const part of parts) undo[part.key] = part.plan.undo;
  const action = p.state === 'absent' ? 'remove' : s.sources.kind === 'absent' ? 'create' : 'change';
  return {
    changed: true,
    action,
    summary: `${p.state === 'absent' ? 'remove' : s.sources.kind === 'absent' ? 'add' : 'update'} apt source ${p.name} (${what.join('; ')})${refresh}${drop}`,
    ...(diffs.length ? { diff: diffs.join('') } : {}),
    undo,
  };
}

export async function checkAptRepository(ctx: StepContext, p: AptRepositoryParams): Promise<AptRepositoryState> {
  return {
    sources: await checkPath(ctx, sourcesPath(p.name)),
    asc: await checkPath(ctx, keyPath(p.name, 'asc')),
    gpg: await checkPath(ctx, keyPath(p.name, 'gpg')),
  };
}

/**
 * Shell: `apt-get update` of this one source — its file as the only source list, no parts folder,
 * and no cleanup of the other sources' lists (which this run does not see). Waits for another
 * refresh as the package step does. --error-on=any and the check of W:/E: lines make a source
 * apt could not verify or reach a failure: apt otherwise only warns and keeps going.
 */
export function restrictedUpdateScript(name: string): string {
  const opts = ['-q', `-o Dir::Etc::sourcelist=${quote(`sources.list.d/${name}.sources`)}`, '-o Dir::Etc::sourceparts=-', '-o APT::Get::List-Cleanup=0', '--error-on=any'].join(' ');
  return [
    'i=0',
    'while :; do',
    `  if out=$(apt-get ${opts} update 2>&1); then break; fi`,
    `  if printf "%s" "$out" | grep -q "Could not get lock" && [ $i -lt ${LOCK_TIMEOUT_S} ]; then i=$((i+2)); sleep 2; continue; fi`,
    '  printf "%s\\n" "$out" | grep "^[WE]: " >&2 || printf "%s\\n" "$out" >&2; exit 100',
    'done',
    'if printf "%s\\n" "$out" | grep -q "^[WE]: "; then printf "%s\\n" "$out" | grep "^[WE]: " >&2; exit 100; fi',
  ].join('\n');
}

/**
 * Shell: deletes the list files of each prefix that no source apt now has still uses (so apt stops
 * offering the packages of a source that is gone); keeps them all when apt cannot say which it
 * uses. Also their partial downloads.
 */
export function dropListsScript(prefixes: string[]): string {
  const safe = prefixes.filter((x) => PREFIX_OK.test(x));
  if (!safe.length) return 'true';
  return [
    `cd ${LISTS_DIR} 2>/dev/null || exit 0`,
    `used=$(apt-get indextargets --format '$(FILENAME)' 2>/dev/null) || { echo 'hostsmith: apt-get indextargets failed; apt lists kept' >&2; exit 0; }`,
    ...safe.map((x) => {
      const q = quote(x);
      return `if ! printf '%s\\n' "$used" | grep -qF ${quote(`${LISTS_DIR}/${x}`)}; then rm -f -- ${q}* partial/${q}*; fi`;
    }),
  ].join('\n');
}

const withAptEnv = (script: string) =>
  `export ${Object.entries(APT_ENV)
    .map(([k, v]) => `${k}=${quote(v)}`)
    .join(' ')}\n${script}`;

const dropLists = (ctx: StepContext, prefixes: string[]) => runOk(ctx, dropListsScript(prefixes), `dropping the apt lists of ${ctx.step}`, { env: APT_ENV }).then(() => undefined);

/** Makes the keyrings folder 0755 root:root when the key's write made it (the writer's umask decided its mode). */
async function keyringsMode(ctx: StepContext): Promise<void> {
  await runOk(ctx, withSafePath(`hs_cd /etc/apt || exit $?\nhs_meta keyrings 0755 root:root`), `setting the mode of ${KEYRINGS_DIR}`);
}

function filePart(ctx: StepContext, part: FilePart, was: PathState, undo: FileUndo, keep: (now: PathState) => void): Part {
  return {
    apply: async () => {
      keep((await applyPath(ctx, part.wanted, { ...part.plan, undo }, was)) ?? was);
      if (undo.kind === 'absent' && undo.created.includes(KEYRINGS_DIR)) await keyringsMode(ctx);
    },
    rollback: () => rollbackPath(ctx, undo),
  };
}

function undoSummary(u: UndoData): string {
  const parts = (['gpg', 'asc', 'sources'] as const).flatMap((k) => (u[k] && typeof u[k] === 'object' ? [pathUndoSummary(u[k] as UndoData)] : []));
  const lists = Array.isArray(u.lists) && u.lists.length ? ['drop the apt lists of the source unless another source still uses them'] : [];
  return parts.length ? [...parts, ...lists].join('; ') : `nothing to put back for apt source ${str(u, 'name') ?? '?'}`;
}

function undoMismatch(p: AptRepositoryParams, u: UndoData): string | undefined {
  if (u.name !== p.name) return `its undo data is for apt source ${JSON.stringify(u.name)}, not ${p.name}`;
  if (u.lists !== undefined && (!Array.isArray(u.lists) || u.lists.some((x) => typeof x !== 'string' || !PREFIX_OK.test(x))))
    return 'its undo data names apt list files that are not list-file prefixes';
  return partsUndoMismatch(u, [
    ['sources', sourcesPath(p.name)],
    ['asc', keyPath(p.name, 'asc')],
    ['gpg', keyPath(p.name, 'gpg')],
  ]);
}

/** Newest first: the keys, then the .sources file, then the lists nothing uses any more. */
const rollbackOrder = (u: AptRepositoryUndo) => (['gpg', 'asc', 'sources'] as const).map((k) => u[k]).filter((f): f is FileUndo => !!f);

export const aptRepositoryStep: StepType<AptRepositoryParams, AptRepositoryState, AptRepositoryUndo> = {
  type: 'apt_repository',
  schema: aptRepositorySchema,
  async prepare(ctx, p) {
    if (!p.key || !('file' in p.key)) return p;
    // Read like the file step's src: bytes as they are, carried as base64.
    const { content } = await ctx.readSource(p.key.file, 'files').catch((e: unknown) => {
      throw new InputError(`step "${ctx.step}": apt_repository.key.file: ${(e as Error).message}`);
    });
    return { ...p, resolvedKey: content.toString('base64') };
  },
  check: checkAptRepository,
  guarded: true,
  plan: planAptRepository,
  async apply(ctx, p, plan, s) {
    const undo = plan.undo!;
    const env = { runId: ctx.runId, step: ctx.step, backupDir: ctx.backupDir };
    const now = fileParts(p, s, env);
    const state: AptRepositoryState = { ...s };
    const parts: Part[] = [];
    for (const key of ['sources', 'gpg', 'asc'] as const) {
      const u = undo[key];
      if (!u) continue;
      const part = now.find((x) => x.key === key);
      if (!part) throw new StepError(`${key === 'sources' ? sourcesPath(p.name) : keyPath(p.name, key)} no longer needs the change that was planned; make a new plan`);
      parts.push(
        filePart(ctx, part, s[key], u, (n) => {
          state[key] = n;
        }),
      );
    }
    if (p.state === 'present' && p.update_cache)
      parts.push({
        apply: () => runOk(ctx, restrictedUpdateScript(p.name), `apt-get update of the source ${p.name}`, { env: APT_ENV }),
        rollback: async () => undefined,
      });
    if (p.state === 'absent') parts.push({ apply: () => dropLists(ctx, undo.lists), rollback: async () => undefined });
    try {
      await applyParts(parts);
    } catch (e) {
      // applyParts has put the files back by now: what a failed update fetched or half-fetched for
      // this source would only mislead apt (dropped unless the source as put back uses it).
      if (p.state === 'present') await dropLists(ctx, undo.lists).catch(() => undefined);
      throw e;
    }
    return { state };
  },
  rollback: (ctx, _p, undo) => rollbackParts([...rollbackOrder(undo).map((f) => () => rollbackPath(ctx, f)), () => dropLists(ctx, undo.lists ?? [])]),
  hostRollback: (_p, undo) => rollbackPartsScript([...rollbackOrder(undo).map(rollbackPathScript), withAptEnv(dropListsScript(undo.lists ?? []))]),
  stateKey: (_p, s) => ({ sources: pathKey(s.sources), asc: pathKey(s.asc), gpg: pathKey(s.gpg) }),
  footprint: (p) => {
    const paths = [`path:${sourcesPath(p.name)}`, `path:${keyPath(p.name, 'asc')}`, `path:${keyPath(p.name, 'gpg')}`];
    // A new or changed source changes what apt offers (and the lists an update or a rollback
    // writes): a later package step reads apt:lists, so its plan is known only after this apply.
    return { reads: paths, writes: [...paths, 'apt:lists', `path:${LISTS_DIR}`] };
  },
  wrote: (_p, undo) => [...pathWrote(undo?.sources ?? null), ...pathWrote(undo?.asc ?? null), ...pathWrote(undo?.gpg ?? null)],
  undoSummary,
  undoMismatch,
  async staticCheck(raw, env): Promise<StaticProblem[]> {
    const key = raw.key;
    const file = key && typeof key === 'object' && !Array.isArray(key) ? (key as UndoData).file : undefined;
    if (typeof file !== 'string' || !file || file.includes('{{')) return [];
    const found = await env.findSource(file, 'files');
    return 'looked' in found ? [{ path: ['key', 'file'], message: found.why ?? `key file "${file}" not found (looked in ${found.looked.join(', ')})` }] : [];
  },
};
