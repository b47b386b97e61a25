/**
 * Public keys in a user's authorized_keys, one key at a time (the user step's `authorized_keys`
 * owns the whole file instead). The file sits in a folder its user owns and may be hostile: every
 * read and write goes through file-state.ts, which refuses a link the user could have planted
 * (in the folders above, or the file itself) and writes by the bare name without following one.
 */
import { posix } from 'node:path';
import { z } from 'zod';
import { StepError } from '../../errors.js';
import { quote } from '../../shell/script.js';
import { accountName, flag } from '../accounts.js';
import { applyPath, checkPath, pathKey, pathUndoMismatch, pathUndoSummary, pathWrote, planPath, rollbackPath, rollbackPathScript, type FileUndo, type PathState } from '../file-state.js';
import { absolutePath, absolutePathProblem } from '../paths.js';
import type { Plan, PlanEnv, StepContext, StepType } from '../step.js';
import { str, type UndoData } from '../undo-text.js';

/** A key type as OpenSSH names it: ssh-ed25519, ecdsa-sha2-nistp256, sk-…@openssh.com, and their -cert-v01 forms. */
const KEY_TYPE = /^(ssh-|ecdsa-sha2-|sk-)[A-Za-z0-9@.-]+$/;
const BASE64 = /^[A-Za-z0-9+/]+={0,3}$/;

export interface Key {
  /** As written before the type ("from=\"10.0.0.0/8\",no-pty"); '' when none. */
  options: string;
  type: string;
  blob: string;
  comment: string;
}

/** What names a key: its type and base64 blob (comment and options are not the key). */
export const keyId = (k: Pick<Key, 'type' | 'blob'>) => `${k.type} ${k.blob}`;
export const keyLine = (k: Key) => [k.options, k.type, k.blob, k.comment].filter(Boolean).join(' ');

/** The options field: up to the first blank outside double quotes (sshd(8) AUTHORIZED_KEYS FILE FORMAT). */
function splitOptions(line: string): [string, string] {
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === '\\' && quoted) i++;
    else if (c === '"') quoted = !quoted;
    else if (!quoted && (c === ' ' || c === '\t')) return [line.slice(0, i), line.slice(i).trimStart()];
  }
  return [line, ''];
}

/** One line of an authorized_keys file as a key; undefined for blanks, comments and lines that hold no key. */
export function parseKeyLine(line: string): Key | undefined {
  const t = line.trim();
  if (!t || t.startsWith('#')) return undefined;
  let options = '';
  let rest = t;
  if (!KEY_TYPE.test(t.split(/\s+/)[0]!)) [options, rest] = splitOptions(t);
  const m = /^(\S+)\s+(\S+)(?:\s+(.*))?$/.exec(rest);
  if (!m || !KEY_TYPE.test(m[1]!) || !BASE64.test(m[2]!)) return undefined;
  return { options, type: m[1]!, blob: m[2]!, comment: (m[3] ?? '').trim() };
}

/** Why a key line given in a recipe is not a public key, or undefined when it is one. */
export function keyProblem(line: string): string | undefined {
  const k = parseKeyLine(line);
  if (!k) return `not a public key line ("<type> <base64> [comment]", optionally after options): ${JSON.stringify(line.length > 60 ? `${line.slice(0, 60)}…` : line)}`;
  // The blob starts with its own type name: a key pasted under the wrong type (or cut short) is caught here.
  const b = Buffer.from(k.blob, 'base64');
  const n = b.length >= 4 ? b.readUInt32BE(0) : -1;
  if (n < 0 || b.subarray(4, 4 + n).toString('latin1') !== k.type)
    return `the key data of ${JSON.stringify(`${k.type} ${k.blob.slice(0, 20)}…`)} is not a ${k.type} key (cut short, or the wrong type)`;
  return undefined;
}

const keyText = z.string().refine((s) => !s.includes('\0'), 'a key cannot hold a NUL byte');

export const authorizedKeySchema = z
  .object({
    user: accountName('user'),
    /** One or more public key lines. */
    key: keyText.optional(),
    keys: z.array(keyText).optional(),
    state: z.enum(['present', 'absent']).default('present'),
    /** Only the listed keys remain (other key lines are removed; comments and blank lines stay). */
    exclusive: flag.default(false),
    /** Options every listed key gets; with them, a key's whole line (options and comment) must match. */
    options: z
      .string()
      .refine((s) => !/[\r\n\0]/.test(s), 'options must be a single line')
      .optional(),
    /** Default: ~user/.ssh/authorized_keys, the home read from the host. */
    path: absolutePath.optional(),
  })
  .strict()
  .superRefine((p, ctx) => {
    const issue = (path: Array<string | number>, message: string) => ctx.addIssue({ code: z.ZodIssueCode.custom, message, path });
    if ((p.key === undefined) === (p.keys === undefined)) issue(['key'], 'give either key or keys (one of them)');
    const lines = keyLinesOf(p);
    if (p.key !== undefined && !lines.length) issue(['key'], 'key holds no key line');
    if (p.keys !== undefined && !p.keys.length) issue(['keys'], 'keys must list at least one key');
    if (p.keys !== undefined) {
      p.keys.forEach((k, i) => {
        if (/[\r\n]/.test(k.trim())) issue(['keys', i], 'one key per list item (no line breaks)');
        else if (!k.trim() || k.trim().startsWith('#')) issue(['keys', i], 'not a public key line (empty, or a comment)');
        else {
          const why = keyProblem(k);
          if (why) issue(['keys', i], why);
        }
      });
    } else {
      for (const l of lines) {
        const why = keyProblem(l);
        if (why) issue(['key'], why);
      }
    }
    if (p.state === 'absent' && p.exclusive) issue(['exclusive'], 'exclusive is only for state: present');
    if (p.state === 'absent' && p.options !== undefined) issue(['options'], 'options are only for state: present');
    if (p.options?.trim() && !parseKeyLine(`${p.options.trim()} ssh-ed25519 AAAA`)?.options) issue(['options'], 'options must be one field with no blanks outside double quotes');
  });

export type AuthorizedKeyParams = z.output<typeof authorizedKeySchema>;

/** The key lines the params give, blanks and comments left out (`key` may hold several lines). */
function keyLinesOf(p: Pick<AuthorizedKeyParams, 'key' | 'keys'>): string[] {
  const all = p.keys ?? (p.key ?? '').split(/\r?\n/);
  return all.map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
}

/** The wanted keys, by id, first one of each kept; `options` (when given) replaces each key's own. */
export function wantedKeys(p: AuthorizedKeyParams): Map<string, Key> {
  const out = new Map<string, Key>();
  for (const l of keyLinesOf(p)) {
    const k = parseKeyLine(l);
    if (!k || out.has(keyId(k))) continue;
    out.set(keyId(k), p.options !== undefined ? { ...k, options: p.options.trim() } : k);
  }
  return out;
}

export interface KeysEdit {
  /** The new text; the same string when nothing changes. */
  text: string | null;
  added: Key[];
  updated: Key[];
  removed: Key[];
  /** Lines that are neither keys nor comments, removed by exclusive. */
  dropped: number;
}

/**
 * The file's text with the params applied. Present: a listed key that is there stays as it is
 * (with `options` given, its line is rewritten unless it is exactly the wanted one, and any later
 * line of the same key goes: sshd would try that one too); a missing one is appended. Exclusive:
 * every other key line goes. Absent: every line of a listed key goes. Other lines stay byte for byte.
 */
export function editKeys(text: string | null, p: AuthorizedKeyParams): KeysEdit {
  const want = wantedKeys(p);
  const lines = text === null || text === '' ? [] : text.replace(/\n$/, '').split('\n');
  const out: string[] = [];
  const seen = new Set<string>();
  const r: KeysEdit = { text, added: [], updated: [], removed: [], dropped: 0 };
  const strict = p.options !== undefined;
  for (const l of lines) {
    const k = parseKeyLine(l);
    if (!k) {
      const junk = l.trim() !== '' && !l.trim().startsWith('#');
      if (p.state === 'present' && p.exclusive && junk) r.dropped++;
      else out.push(l);
      continue;
    }
    const id = keyId(k);
    const w = want.get(id);
    if (p.state === 'absent') {
      if (w) r.removed.push(k);
      else out.push(l);
      continue;
    }
    if (!w) {
      if (p.exclusive) r.removed.push(k);
      else out.push(l);
      continue;
    }
    if (seen.has(id)) {
      if (strict || p.exclusive) r.removed.push(k);
      else out.push(l);
      continue;
    }
    seen.add(id);
    // Without options, a key that is there is enough, whatever its comment and options say.
    if (strict && l.replace(/\r$/, '').trim() !== keyLine(w)) {
      out.push(keyLine(w));
      r.updated.push(w);
    } else out.push(l);
  }
  if (p.state === 'present') {
    for (const [id, w] of want) {
      if (seen.has(id)) continue;
      out.push(keyLine(w));
      r.added.push(w);
    }
  }
  if (r.added.length || r.updated.length || r.removed.length || r.dropped) r.text = `${out.join('\n')}${out.length ? '\n' : ''}`;
  return r;
}

export interface Account {
  uid: number;
  gid: number;
  /** Name of the primary group ('' when the gid has no group entry). */
  group: string;
  home: string;
}

export interface AuthorizedKeyState {
  user: Account;
  file: PathState;
}

export interface AuthorizedKeyUndo {
  user: string;
  file: FileUndo;
}

const homeKeys = (home: string) => posix.join(home, '.ssh', 'authorized_keys');
export const keysPath = (p: Pick<AuthorizedKeyParams, 'path'>, home: string): string => p.path ?? homeKeys(home);

/** The path the footprint names before the host is read: the given one, else the usual home (/root, /home/<user>). */
const likelyPath = (p: Pick<AuthorizedKeyParams, 'path' | 'user'>) => keysPath(p, p.user === 'root' ? '/root' : `/home/${p.user}`);

/** Shell: the user's passwd entry and the name of its primary group, one per line; "nouser" when there is no such user. */
export function accountScript(user: string): string {
  return [`pw=$(getent passwd ${quote(user)}) || { echo nouser; exit 0; }`, `printf '%s\\n' "$pw"`, `getent group "$(printf %s "$pw" | cut -d: -f4)" | cut -d: -f1`].join('\n');
}

export function parseAccount(out: string, user: string): Account {
  const [pw = '', group = ''] = out.split('\n');
  if (pw === 'nouser') throw new StepError(`user ${user} does not exist on this host: create it first (a user step before this one)`);
  const f = pw.split(':');
  if (f.length < 7 || !/^\d+$/.test(f[2] ?? '') || !/^\d+$/.test(f[3] ?? '')) throw new StepError(`cannot read user ${user}: unexpected passwd entry ${JSON.stringify(pw)}`);
  return { uid: Number(f[2]), gid: Number(f[3]), group, home: f[5]! };
}

async function checkKeys(ctx: StepContext, p: AuthorizedKeyParams): Promise<AuthorizedKeyState> {
  const r = await ctx.exec(accountScript(p.user));
  if (r.code !== 0) throw new StepError(`cannot read user ${p.user}: ${r.stderr.trim() || `exit ${r.code}`}`, { code: r.code, stderr: r.stderr });
  const user = parseAccount(r.stdout, p.user);
  if (p.path === undefined) {
    const why = absolutePathProblem(user.home);
    if (why) throw new StepError(`the home of user ${p.user} (${JSON.stringify(user.home)}) cannot hold its keys: it ${why}; give path`);
  }
  // The second read follows from the first (the home); the batch serves it in a second round.
  return { user, file: await checkPath(ctx, keysPath(p, user.home)) };
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function textOf(path: string, s: PathState): string | null {
  if (s.kind === 'absent') return null;
  if (s.kind === 'link') throw new StepError(`${path} is a symbolic link (to ${s.target}); hostsmith does not read or write keys through a link: remove it, or give the real file as path`);
  if (s.kind !== 'file') throw new StepError(`${path} is a ${s.kind === 'directory' ? 'directory' : 'special file'}, not a regular file`);
  try {
    const c = s.content ?? Buffer.alloc(0);
    if (c.includes(0)) throw new Error('NUL');
    return utf8.decode(c);
  } catch {
    throw new StepError(`${path} is not a text file (not UTF-8, or it has NUL bytes)`);
  }
}

/** The ~/.ssh folder the step makes (0700, the user's), when it must make it; else undefined. */
function sshDirToMake(p: AuthorizedKeyParams, s: AuthorizedKeyState): string | undefined {
  if (p.path !== undefined || s.file.kind !== 'absent') return undefined;
  const dir = posix.dirname(homeKeys(s.user.home));
  return s.file.missing.includes(dir) ? dir : undefined;
}

const ownerOf = (p: AuthorizedKeyParams, s: AuthorizedKeyState) => ({ owner: p.user, group: s.user.group || String(s.user.gid) });

/** Short, for a summary: the type and the comment (or the end of the key). */
const describe = (k: Key) => `${k.type} ${k.comment || `…${k.blob.slice(-8)}`}`;
const counted = (verb: string, ks: Key[]) => (ks.length ? [`${verb} ${ks.length} key${ks.length === 1 ? '' : 's'} (${ks.map(describe).join(', ')})`] : []);

export function planAuthorizedKey(p: AuthorizedKeyParams, s: AuthorizedKeyState, env: PlanEnv): Plan<AuthorizedKeyUndo> {
  const path = keysPath(p, s.user.home);
  const text = textOf(path, s.file);
  const e = editKeys(text, p);
  const whose = `${p.user}'s ${path}`;
  if (e.text === text) {
    const n = wantedKeys(p).size;
    if (p.state === 'absent') return { changed: false, summary: `${text === null ? `${path} does not exist` : `none of the ${n} key${n === 1 ? ' is' : 's are'} in ${whose}`}`, undo: null };
    return { changed: false, summary: `${whose} holds the ${n} key${n === 1 ? '' : 's'} as wanted${p.exclusive ? ' (and no other)' : ''}`, undo: null };
  }
  const dir = sshDirToMake(p, s);
  if (p.path === undefined && s.file.missing.some((d) => d !== dir)) {
    throw new StepError(`the home ${s.user.home} of user ${p.user} does not exist; hostsmith does not create homes (a user step with create_home does)`);
  }
  const changes = [
    ...counted('add', e.added),
    ...counted('update', e.updated),
    ...counted('remove', e.removed),
    ...(e.dropped ? [`remove ${e.dropped} line${e.dropped === 1 ? ' that holds' : 's that hold'} no key`] : []),
  ];
  const content = Buffer.from(e.text ?? '', 'utf8');
  // A new file is the user's, 0600 (sshd's StrictModes); an existing one keeps its mode and owner.
  const fp = planPath({ path, state: 'present', content, ...(s.file.kind === 'absent' ? { mode: 0o600, ...ownerOf(p, s) } : {}) }, s.file, env);
  const made = [...(dir ? [`folder ${dir} (0700 ${ownerOf(p, s).owner}:${ownerOf(p, s).group})`] : []), ...s.file.missing.filter((d) => d !== dir).map((d) => `folder ${d}`)];
  const summary = `${s.file.kind === 'absent' ? `create ${whose} (0600 ${ownerOf(p, s).owner}:${ownerOf(p, s).group}${made.length ? `, and ${made.join(', ')}` : ''})` : `update ${whose}`}: ${changes.join(', ')}`;
  return {
    changed: true,
    action: s.file.kind === 'absent' ? 'create' : p.state === 'absent' ? 'remove' : 'change',
    summary,
    ...(fp.diff ? { diff: fp.diff } : {}),
    undo: { user: p.user, file: fp.undo! },
  };
}

export const authorizedKeyStep: StepType<AuthorizedKeyParams, AuthorizedKeyState, AuthorizedKeyUndo> = {
  type: 'authorized_key',
  schema: authorizedKeySchema,
  check: checkKeys,
  guarded: true,
  plan: planAuthorizedKey,
  async apply(ctx, p, plan, s) {
    const undo = plan.undo!;
    const path = keysPath(p, s.user.home);
    const e = editKeys(textOf(path, s.file), p);
    // applyPath holds the file (and the folders above it) to what the check read, in the exec that writes it.
    const w = { path, state: 'present' as const, content: Buffer.from(e.text ?? '', 'utf8'), ...(s.file.kind === 'absent' ? { mode: 0o600, ...ownerOf(p, s) } : {}) };
    const file = await applyPath(ctx, w, { changed: true, summary: plan.summary, undo: undo.file }, s.file);
    const dir = sshDirToMake(p, s);
    if (dir) {
      // The folder came into being root's (hs_mkcd) with the file in it; now it becomes the user's, as sshd wants it.
      try {
        await applyPath(ctx, { path: dir, state: 'directory', mode: 0o700, ...ownerOf(p, s) }, { changed: true, summary: plan.summary, undo: { kind: 'directory', path: dir } });
      } catch (x) {
        // The engine rolls back completed steps only: a half-done step undoes itself (the file, and the folder it made).
        try {
          await rollbackPath(ctx, undo.file);
        } catch (r) {
          throw new StepError(`${(x as Error).message}; removing ${path} again also failed: ${(r as Error).message}`, { cause: x });
        }
        throw x;
      }
    }
    return file ? { state: { user: s.user, file } } : {};
  },
  rollback: (ctx, _p, undo) => rollbackPath(ctx, undo.file),
  hostRollback: (_p, undo) => rollbackPathScript(undo.file),
  stateKey: (_p, s) => ({ user: s.user, file: pathKey(s.file) }),
  // The home comes from the host; before it is read, the usual one stands for it (as the user step's footprint has it).
  footprint: (p) => ({ reads: [`user:${p.user}`, 'path:/etc/passwd', `path:${likelyPath(p)}`], writes: [`path:${likelyPath(p)}`] }),
  wrote: (_p, undo) => pathWrote(undo?.file ?? null),
  undoSummary: (u: UndoData) => {
    const file = u.file && typeof u.file === 'object' ? pathUndoSummary(u.file as UndoData) : 'nothing recorded';
    return `${file} (authorized keys of ${str(u, 'user') ?? '?'})`;
  },
  undoMismatch: (p, u) => {
    if (u.user !== p.user) return `its undo data is for user ${JSON.stringify(u.user)}, not ${p.user}`;
    const file = u.file as UndoData | undefined;
    if (!file || typeof file !== 'object' || typeof file.path !== 'string') return 'its undo data names no file';
    if (p.path === undefined && !file.path.endsWith('/.ssh/authorized_keys')) return `its undo data would write ${JSON.stringify(file.path)}, which is not an authorized_keys file`;
    return pathUndoMismatch(p.path ?? file.path, file);
  },
  gone: async (ctx, p) => ((await ctx.exec(`getent passwd ${quote(p.user)} >/dev/null`)).code === 0 ? null : `user ${p.user} no longer exists`),
};
