/**
 * `git`: a repository checked out at a branch, tag or commit in a folder on the host.
 *
 * Reading is kept to what changes nothing: `git ls-remote` names the commit a branch or tag is at
 * (a full commit id needs no read at all), and the clone, if there is one, is read with optional
 * locks off, so even `git status` leaves its index alone in a dry run. A fetch is a change, made
 * only by the apply.
 *
 * Who runs git: `owner` when given (through sudo -u, as a command step's `user`), else the step's
 * own user. git is never run in a clone someone else owns: its config and hooks are that owner's
 * commands (git itself calls that "dubious ownership"), so such a clone is refused with the owner
 * to name. A clone the step makes is made in a folder root creates (entered from `/` refusing a
 * link another user could have planted, as every host write here is) and hands to `owner` first.
 *
 * What rollback puts back: a clone it made is removed entirely (with the folders made for it; a
 * folder that was there empty is emptied again and given back its owner and mode); a clone it
 * moved is checked out at the commit it was at, on the branch it was on (or detached), and the
 * local branch the step moved or made is put back or deleted. Objects and remote-tracking refs a
 * fetch brought in stay: they are git's cache, and no commit is checked out from them.
 */
import { flag } from '../accounts.js';
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { StepError } from '../../errors.js';
import { quote } from '../../shell/quote.js';
import { enterScript, splitPath, unsafeParentsScript, withSafePath } from '../../shell/safe-path.js';
import type { Footprint } from '../footprint.js';
import { absolutePath, absolutePathProblem, ownerName } from '../paths.js';
import { tail, type Plan, type PlanEnv, type StepContext, type StepType } from '../step.js';
import { str, type UndoData } from '../undo-text.js';

const FULL_SHA = /^[0-9a-f]{40}$/i;
const SHORT_SHA = /^[0-9a-f]{4,39}$/i;
const SHA = /^[0-9a-f]{40}$/;
const templated = (s: string) => s.includes('{{');

/** Why `v` cannot be a branch, tag or commit name (git's own rules, kept to what a shell word needs). */
export function versionProblem(v: string): string | undefined {
  if (v === '') return 'version must not be empty';
  if (v.startsWith('-')) return `version ${JSON.stringify(v)} starts with "-" (git would read it as an option)`;
  if (/[\s\0-\x1f\x7f~^:?*[\\]/.test(v)) return `version ${JSON.stringify(v)} holds a blank, a control character or one of ~ ^ : ? * [ \\, which no branch or tag name can`;
  if (v.includes('..') || v.includes('@{') || v.startsWith('/') || v.endsWith('/') || v.endsWith('.lock') || v.includes('//') || v.split('/').some((c) => c.startsWith('.')))
    return `version ${JSON.stringify(v)} is not a valid branch or tag name`;
  return undefined;
}

/** Why `r` cannot be handed to git as the repository. */
function repoProblem(r: string): string | undefined {
  if (r === '') return 'repo must not be empty';
  if (/[\0-\x1f\x7f]/.test(r)) return 'repo cannot contain a line break or a control character';
  if (r.startsWith('-')) return `repo ${JSON.stringify(r)} starts with "-" (git would read it as an option)`;
  if (r.startsWith('/')) return absolutePathProblem(r);
  return undefined;
}

export const gitSchema = z
  .object({
    repo: z.string().superRefine((r, ctx) => {
      const why = templated(r) ? undefined : repoProblem(r);
      if (why) ctx.addIssue({ code: z.ZodIssueCode.custom, message: why });
    }),
    dest: absolutePath.refine((d) => d !== '/', 'cannot clone into / itself: name a folder'),
    version: z
      .string()
      .superRefine((v, ctx) => {
        const why = templated(v) ? undefined : versionProblem(v);
        if (why) ctx.addIssue({ code: z.ZodIssueCode.custom, message: why });
      })
      .optional(),
    owner: ownerName('owner').optional(),
    group: ownerName('group').optional(),
    depth: z.number().int().min(1).optional(),
    force: flag.default(false),
  })
  .strict();

export type GitParams = z.output<typeof gitSchema>;

export interface GitState {
  /** Is git installed (for the user it runs as)? */
  git: boolean;
  /** Who git runs as (`id -un`). */
  runner?: string;
  /** What dest is: nothing; an empty folder; a clone git may run in; a clone of another user's; anything else. */
  dest?: 'absent' | 'empty' | 'clone' | 'foreign' | 'notclone' | 'other';
  /** dest and the folders above it that do not exist, outermost first. */
  missing: string[];
  /** An empty dest's owner, group and mode (put back by a rollback that empties it again). */
  dir?: { owner: string; group: string; mode: number };
  /** The owner of a clone git may not run in. */
  foreignOwner?: string;
  /** The clone's HEAD commit (null: nothing checked out), branch (null: detached) and origin URL. */
  head?: string | null;
  branch?: string | null;
  origin?: string;
  /** The clone's local branches and the commit each is at. */
  branches?: Record<string, string>;
  /** A short commit as the clone resolves it, when version looks like one. */
  local?: string | null;
  /** Tracked files with local modifications (`git status --porcelain` lines). */
  changed?: string[];
  /** What `git ls-remote` said: the default branch and the refs asked for, or why it could not read. */
  remote?: { head?: string; refs: Record<string, string> } | { error: string };
  /** Commits a move goes forward over (new..) and back over, when the clone already has the new one; null: it does not. */
  log?: { forward: string[]; back: string[] } | null;
}

/** The commit the step checks out, and how it was named. */
export interface Target {
  kind: 'branch' | 'tag' | 'commit';
  name: string;
  /** null: a short commit id the host cannot resolve before a fetch. */
  sha: string | null;
}

/** Metadata of an empty folder the clone was made in. */
export interface DirMeta {
  owner: string;
  group: string;
  mode: number;
}

export type GitUndo = {
  dest: string;
  /** Who git ran as: the rollback of a move runs git as that user again. */
  runner: string;
  /** The commit the step checks out (null: a short id resolved at the fetch). */
  to: string | null;
} & (
  | {
      clone: 'made';
      /** The folders made for it, outermost first (dest last); empty when dest was an empty folder. */
      dirs: string[];
      /** dest was an empty folder with this owner and mode. */
      dir?: DirMeta;
    }
  | {
      clone: 'moved';
      /** The commit the clone was at, and its branch (null: detached). */
      head: string;
      branch: string | null;
      /** The local branch the step moves or makes, and where it was (null: it did not exist). */
      ref?: { name: string; sha: string | null };
      /**
       * With force over local modifications: the ref the apply keeps them under (as `git stash
       * create` makes them, a commit on the old HEAD) before throwing them away; rollback applies
       * them again and deletes it.
       */
      kept?: string;
    }
);

/** Shell lines every git script starts with: never a prompt for a password or a host key, no optional locks. */
const GIT_ENV = [
  'export GIT_TERMINAL_PROMPT=0 GIT_OPTIONAL_LOCKS=0',
  'GIT_SSH_COMMAND=${GIT_SSH_COMMAND:-ssh -o BatchMode=yes}; export GIT_SSH_COMMAND',
  'hs_fail() { printf \'hostsmith: %s\\n\' "$1" >&2; exit 1; }',
].join('\n');

const lsPatterns = (p: GitParams) => (p.version === undefined || FULL_SHA.test(p.version) ? ['HEAD'] : ['HEAD', `refs/heads/${p.version}`, `refs/tags/${p.version}`, `refs/tags/${p.version}^{}`]);

/**
 * The read, as the user git runs as: planted links above dest refused (exit 77), git's presence,
 * the remote's refs (none for a full commit id), what dest is, and for a clone of the runner's its
 * HEAD, branch, origin, local branches and — last, NUL-separated — the tracked files modified.
 */
export function checkScript(p: GitParams): string {
  const d = quote(p.dest);
  const lines = [GIT_ENV, unsafeParentsScript(`${p.dest}/x`), 'command -v git >/dev/null 2>&1 || { echo nogit; exit 0; }', 'hs_me=$(id -un) || exit 1', 'echo "runner $hs_me"', 'cd / || exit 1'];
  if (p.version === undefined || !FULL_SHA.test(p.version)) {
    lines.push(
      `if hs_ls=$(git ls-remote --symref -- ${quote(p.repo)} ${lsPatterns(p).map(quote).join(' ')} 2>&1); then printf '%s\\n' "$hs_ls" | sed 's/^/ls /'; else printf '%s\\n' "$hs_ls" | sed 's/^/lserr /'; fi`,
    );
  }
  lines.push(
    `n=0; x=${d}`,
    'while [ -n "$x" ] && [ ! -e "$x" ] && [ ! -L "$x" ]; do n=$((n+1)); x=${x%/*}; done',
    'if [ "$n" -gt 0 ]; then echo "dest absent $n"; exit 0; fi',
    `if [ -L ${d} ] || [ ! -d ${d} ]; then echo 'dest other'; exit 0; fi`,
    `hs_e=$(ls -A -- ${d}) || exit 1`,
    `if [ -z "$hs_e" ]; then printf 'dest empty %s\\n' "$(stat -c '%U %G %a' -- ${d})"; exit 0; fi`,
    // Judged where we stand, so a folder renamed into dest's place meanwhile is the one judged.
    `cd -P -- ${d} || exit 1`,
    "if [ -L .git ] || [ ! -d .git ]; then echo 'dest notclone'; exit 0; fi",
    // git is not run in a clone another user owns: its config and hooks would run as us.
    'hs_o=$(stat -c %U -- .git) && hs_do=$(stat -c %U -- .) || exit 1',
    'if [ "$hs_o" != "$hs_me" ] || [ "$hs_do" != "$hs_me" ]; then [ "$hs_o" = "$hs_me" ] && hs_o=$hs_do; echo "dest foreign $hs_o"; exit 0; fi',
    'echo "dest clone"',
    'echo "head $(git rev-parse -q --verify HEAD)"',
    'echo "branch $(git symbolic-ref -q --short HEAD)"',
    'echo "origin $(git config --get remote.origin.url)"',
    "git for-each-ref --format='bref %(objectname) %(refname:lstrip=2)' refs/heads/",
  );
  if (p.version !== undefined && SHORT_SHA.test(p.version)) lines.push(`echo "local $(git rev-parse -q --verify ${quote(`${p.version}^{commit}`)})"`);
  lines.push('echo changed', 'git status --porcelain -z --untracked-files=no || exit 1');
  return lines.join('\n');
}

/** Reads what checkScript printed. */
export function parseCheck(out: string, p: GitParams): GitState {
  const at = out.indexOf('\nchanged\n');
  const head = at < 0 ? out : out.slice(0, at + 1);
  const s: GitState = { git: true, missing: [] };
  const ls: string[] = [];
  const lserr: string[] = [];
  for (const line of head.split('\n')) {
    const sp = line.indexOf(' ');
    const [k, v] = sp < 0 ? [line, ''] : [line.slice(0, sp), line.slice(sp + 1)];
    if (k === 'nogit') return { git: false, missing: [] };
    else if (k === 'runner') s.runner = v;
    else if (k === 'ls') ls.push(v);
    else if (k === 'lserr') lserr.push(v);
    else if (k === 'dest') {
      const [kind, ...rest] = v.split(' ');
      s.dest = kind as GitState['dest'];
      if (kind === 'absent') {
        for (let d = p.dest, i = 0; i < Number(rest[0]) && d !== '/'; i++, d = d.slice(0, d.lastIndexOf('/')) || '/') s.missing.unshift(d);
      } else if (kind === 'empty') s.dir = { owner: rest[0] ?? '', group: rest[1] ?? '', mode: parseInt(rest[2] ?? '755', 8) };
      else if (kind === 'foreign') s.foreignOwner = rest.join(' ');
    } else if (k === 'head') s.head = v || null;
    else if (k === 'branch') s.branch = v || null;
    else if (k === 'origin') s.origin = v;
    else if (k === 'bref') {
      const [sha, ...name] = v.split(' ');
      (s.branches ??= {})[name.join(' ')] = sha!;
    } else if (k === 'local') s.local = v || null;
  }
  if (!s.dest) throw new StepError(`cannot read ${p.dest}: the host's answer was cut short`);
  if (s.dest === 'clone') s.changed = at < 0 ? [] : porcelain(out.slice(at + '\nchanged\n'.length));
  if (lserr.length) s.remote = { error: lserr.join('\n') };
  else if (p.version === undefined || !FULL_SHA.test(p.version)) {
    const refs: Record<string, string> = {};
    let def: string | undefined;
    for (const l of ls) {
      const sym = /^ref: refs\/heads\/(\S+)\tHEAD$/.exec(l);
      if (sym) def = sym[1];
      const m = /^([0-9a-f]{40})\t(.+)$/.exec(l);
      if (m) refs[m[2]!] = m[1]!;
    }
    s.remote = { ...(def ? { head: def } : {}), refs };
  }
  return s;
}

/** `git status --porcelain -z` entries as "XY path" (a rename's old name dropped). */
function porcelain(z: string): string[] {
  const out: string[] = [];
  const parts = z.split('\0');
  for (let i = 0; i < parts.length; i++) {
    const e = parts[i]!;
    if (e.length < 4) continue;
    out.push(e);
    if (e[0] === 'R' || e[0] === 'C') i++;
  }
  return out;
}

/** The commit version names on the remote (or in the clone, for a short id): throws what is wrong. */
export function resolveTarget(p: GitParams, s: GitState): Target {
  if (p.version !== undefined && FULL_SHA.test(p.version)) return { kind: 'commit', name: p.version.toLowerCase(), sha: p.version.toLowerCase() };
  const remote = s.remote;
  if (!remote) throw new StepError(`cannot read ${p.repo}: no answer from git ls-remote`);
  if ('error' in remote)
    throw new StepError(
      `cannot read the repository ${p.repo} (git ls-remote failed: ${tail(remote.error, 5)}); check the URL or path and that the user git runs as (${s.runner ?? 'the step user'}) can reach it`,
    );
  if (p.version === undefined) {
    const name = remote.head;
    const sha = name ? (remote.refs[`refs/heads/${name}`] ?? remote.refs.HEAD) : undefined;
    if (!name || !sha) throw new StepError(`${p.repo} has no default branch (an empty repository?): push a commit to it, or give version`);
    return { kind: 'branch', name, sha };
  }
  const v = p.version;
  const branch = remote.refs[`refs/heads/${v}`];
  if (branch) return { kind: 'branch', name: v, sha: branch };
  const tag = remote.refs[`refs/tags/${v}^{}`] ?? remote.refs[`refs/tags/${v}`];
  if (tag) return { kind: 'tag', name: v, sha: tag };
  if (SHORT_SHA.test(v)) return { kind: 'commit', name: v.toLowerCase(), sha: s.local ?? null };
  throw new StepError(`${p.repo} has no branch or tag named ${v}: give a branch, a tag or a commit id (git ls-remote ${p.repo} lists them)`);
}

const short = (sha: string | null | undefined) => (sha ? sha.slice(0, 7) : '?');
const named = (t: Target) => (t.kind === 'commit' ? `commit ${short(t.sha) === '?' ? t.name : short(t.sha)}` : `${t.kind} ${t.name}`);
const at = (t: Target) => (t.sha ? `${short(t.sha)} (${t.kind === 'commit' ? 'commit' : `${t.kind} ${t.name}`})` : `${t.name} (a short commit id, resolved when fetched)`);
const sameOrigin = (a: string, b: string) => a.replace(/\/+$/, '') === b.replace(/\/+$/, '');

/** The pure decision: a clone to make, a clone to move (with the commits it moves over), or nothing. */
export function planGit(p: GitParams, s: GitState, env: Pick<PlanEnv, 'runId' | 'step'>): Plan<GitUndo> {
  if (!s.git) throw new StepError('git is not installed on this host; add a package step for git before this step');
  const runner = s.runner ?? '';
  if (s.dest === 'other') throw new StepError(`${p.dest} is not a folder (a file, or a link); remove it first, or clone elsewhere`);
  if (s.dest === 'notclone') throw new StepError(`${p.dest} is a folder with files in it but no git clone (no .git folder); hostsmith does not clone over what is there: empty it, or clone elsewhere`);
  if (s.dest === 'foreign')
    throw new StepError(
      `${p.dest} is a clone owned by ${s.foreignOwner}, but git would run as ${runner}; hostsmith does not run git in another user's clone (its config and hooks are theirs): set owner: ${s.foreignOwner} on the step`,
    );
  const t = resolveTarget(p, s);
  if (s.dest === 'absent' || s.dest === 'empty') {
    const into = s.dest === 'empty' ? ` (the empty folder ${p.dest})` : '';
    const own = p.owner || p.group ? `, owned by ${p.owner ?? runner}${p.group ? `:${p.group}` : ''}` : '';
    return {
      changed: true,
      action: 'create',
      summary: `clone ${p.repo} into ${p.dest}${into} at ${at(t)}${p.depth ? `, depth ${p.depth}` : ''}${own}`,
      undo: { dest: p.dest, runner, to: t.sha, clone: 'made', dirs: [...s.missing], ...(s.dir ? { dir: s.dir } : {}) },
    };
  }
  // A clone of the runner's.
  if (s.origin !== undefined && !sameOrigin(s.origin, p.repo))
    throw new StepError(`${p.dest} is a clone of ${s.origin || '(no origin)'}, not of ${p.repo}; nothing was changed: remove it, or set repo to ${s.origin || 'its origin'}`);
  if (!s.head) throw new StepError(`${p.dest} is a clone with nothing checked out (no commit at HEAD); remove it, or check a commit out by hand`);
  const changed = s.changed ?? [];
  const files = changed.map((c) => c.slice(3));
  if (changed.length && !p.force) {
    throw new StepError(
      `${p.dest} has local modifications in ${files.length === 1 ? '1 file' : `${files.length} files`}: ${files.slice(0, 20).join(', ')}${files.length > 20 ? ', …' : ''}; nothing was changed: commit or discard them on the host, or set force: true to throw them away`,
    );
  }
  const onBranch = t.kind !== 'branch' || s.branch === t.name;
  if (t.sha === s.head && onBranch && !changed.length) {
    return { changed: false, summary: `${p.dest} is at ${at(t)}, with no local modifications`, undo: null };
  }
  const was = `${short(s.head)} (${s.branch ? `branch ${s.branch}` : 'detached'})`;
  const parts = [t.sha === s.head ? `check out ${named(t)} in ${p.dest} at ${short(s.head)}` : `move ${p.dest} from ${was} to ${at(t)}`];
  if (t.sha === s.head && s.branch !== (t.kind === 'branch' ? t.name : null)) parts[0] += ` (was ${s.branch ? `on branch ${s.branch}` : 'detached'})`;
  if (s.log) parts.push(`${s.log.forward.length} commit${s.log.forward.length === 1 ? '' : 's'} forward, ${s.log.back.length} back`);
  else if (t.sha !== s.head) parts.push('the commits it moves over are known after the fetch');
  if (changed.length) parts.push(`discarding local modifications in ${files.join(', ')} (force)`);
  const diff = t.sha !== s.head && s.log ? logDiff(p.dest, was, at(t), s.log) : undefined;
  const ref = t.kind === 'branch' ? { name: t.name, sha: s.branches?.[t.name] ?? null } : undefined;
  const kept = changed.length ? keptRef(env) : undefined;
  return {
    changed: true,
    summary: parts.join('; '),
    ...(diff ? { diff } : {}),
    undo: { dest: p.dest, runner, to: t.sha, clone: 'moved', head: s.head, branch: s.branch ?? null, ...(ref ? { ref } : {}), ...(kept ? { kept } : {}) },
  };
}

/** Where a run's step keeps the local modifications force throws away: a name of its own per run and step. */
export function keptRef(env: Pick<PlanEnv, 'runId' | 'step'>): string {
  return `refs/hostsmith/discarded-${createHash('sha256').update(`${env.runId}\0${env.step}`).digest('hex').slice(0, 16)}`;
}
const KEPT_REF = /^refs\/hostsmith\/discarded-[0-9a-f]{16}$/;

/** The commits a move passes, as a diff shows lines: + forward over, - back over (as `git log --oneline`). */
function logDiff(dest: string, from: string, to: string, log: { forward: string[]; back: string[] }): string {
  return [`--- ${dest} at ${from}`, `+++ ${dest} at ${to}`, ...log.back.map((l) => `-${l}`), ...log.forward.map((l) => `+${l}`), ''].join('\n');
}

/** At most this many commits of a move are listed (the rest counted). */
const LOG_MAX = 20;

/** A second read, for a clone that moves to a commit it already has: the commits between (`git log --oneline`). */
function logScript(p: GitParams, head: string, to: string): string {
  return [
    GIT_ENV,
    `cd -P -- ${quote(p.dest)} || exit 1`,
    `git cat-file -e ${to}^{commit} 2>/dev/null || { echo absent; exit 0; }`,
    'echo forward',
    `git log --oneline --no-decorate --no-color -n ${LOG_MAX + 1} ${head}..${to} || exit 1`,
    'echo back',
    `git log --oneline --no-decorate --no-color -n ${LOG_MAX + 1} ${to}..${head} || exit 1`,
  ].join('\n');
}

function parseLog(out: string): { forward: string[]; back: string[] } | null {
  if (out.startsWith('absent')) return null;
  const [, f = '', b = ''] = /^forward\n([\s\S]*?)back\n?([\s\S]*)$/.exec(out) ?? [];
  const list = (x: string) => {
    const l = x.split('\n').filter(Boolean);
    return l.length > LOG_MAX ? [...l.slice(0, LOG_MAX), '… and more'] : l;
  };
  return { forward: list(f), back: list(b) };
}

/** How git is run for these params: as `owner` (never through the step's sudo to root), else as the step's user. */
const asRunner = (p: Pick<GitParams, 'owner'>) => (p.owner ? { user: p.owner, sudo: false } : {});

async function checkGit(ctx: StepContext, p: GitParams): Promise<GitState> {
  const r = await ctx.exec(checkScript(p), asRunner(p));
  if (r.code !== 0) throw new StepError(`cannot read ${p.dest}${p.owner ? ` as ${p.owner}` : ''}: ${tail(r.stderr) || `exit ${r.code}`}`, { code: r.code, stderr: r.stderr });
  const s = parseCheck(r.stdout, p);
  if (!s.git) throw new StepError(`git is not installed on ${ctx.host}; add a package step for git before this step`);
  if (s.dest === 'clone' && s.head && (p.version === undefined || !FULL_SHA.test(p.version) || s.head !== p.version.toLowerCase())) {
    let to: string | null = null;
    try {
      to = resolveTarget(p, s).sha;
    } catch {
      // planGit says what is wrong with the target.
    }
    if (to && to !== s.head) {
      const l = await ctx.exec(logScript(p, s.head, to), asRunner(p));
      if (l.code !== 0) throw new StepError(`cannot read the history of ${p.dest}: ${tail(l.stderr) || `exit ${l.code}`}`, { code: l.code, stderr: l.stderr });
      s.log = parseLog(l.stdout);
    }
  }
  return s;
}

const chownSpec = (p: Pick<GitParams, 'owner' | 'group'>) => (p.owner || p.group ? `${p.owner ?? ''}${p.group ? `:${p.group}` : ''}` : '');

/** Shell (the step's user, root as a rule): dest made as mkdir -p would, entered refusing planted links, handed to owner/group. */
export function prepareDestScript(p: GitParams): string {
  const own = chownSpec(p);
  return withSafePath(
    [
      `hs_mkcd ${quote(p.dest)} || exit $?`,
      `[ -z "$(ls -A)" ] || { printf '%s\\n' ${quote(`hostsmith: ${p.dest} is no longer empty; nothing was cloned`)} >&2; exit 1; }`,
      ...(own ? [`hs_meta . '' ${quote(own)} || exit $?`] : []),
    ].join('\n'),
  );
}

/**
 * Shell: fetch what the target needs (when the clone lacks its commit) into `hs_want`, a rev naming
 * it. `depth` applies to a shallow clone only: a fetch with --depth would make a whole clone shallow.
 */
function fetchLines(p: GitParams, t: Pick<GitUndo, 'to'>, kind: Target['kind'], name: string): string[] {
  const depth = p.depth ? ' $hs_depth' : '';
  const have = t.to ? `git cat-file -e ${t.to}^{commit} 2>/dev/null` : 'false';
  const pre = p.depth ? [`hs_depth=; [ "$(git rev-parse --is-shallow-repository)" != true ] || hs_depth='--depth ${p.depth}'`] : [];
  if (kind === 'branch') {
    return [...pre, `hs_want=refs/remotes/origin/${quote(name)}`, `${have} && hs_want=${t.to} || git fetch -q${depth} origin ${quote(`+refs/heads/${name}:refs/remotes/origin/${name}`)} || exit 1`];
  }
  if (kind === 'tag') return [...pre, `hs_want=refs/tags/${quote(name)}`, `${have} && hs_want=${t.to} || git fetch -q${depth} origin ${quote(`+refs/tags/${name}:refs/tags/${name}`)} || exit 1`];
  const want = t.to ?? name;
  return [
    ...pre,
    `hs_want=${quote(want)}`,
    `git cat-file -e ${quote(`${want}^{commit}`)} 2>/dev/null || git fetch -q${depth} origin || exit 1`,
    // A commit no branch or tag reaches: asked for by its id (servers allow it for reachable commits).
    ...(t.to ? [`git cat-file -e ${t.to}^{commit} 2>/dev/null || git fetch -q${depth} origin ${t.to} || exit 1`] : []),
  ];
}

/**
 * Shell: hold the commit hs_want names to the planned one, then check it out (`failed`: what to do
 * first when the checkout fails) and print it.
 */
function checkoutLines(t: Pick<GitUndo, 'to'>, kind: Target['kind'], name: string, o: { force?: boolean; before?: string[]; failed?: string } = {}): string[] {
  const f = o.force ? ' -f' : '';
  const fail = o.failed ? `{ ${o.failed}; exit 1; }` : 'exit 1';
  return [
    `hs_c=$(git rev-parse -q --verify "$hs_want^{commit}") || hs_fail ${quote(`${kind} ${name} is not in the repository after the fetch`)}`,
    ...(t.to ? [`[ "$hs_c" = ${t.to} ] || hs_fail "${kind} ${name} is now at $hs_c, not at ${t.to} as planned; nothing was checked out: make a new plan"`] : []),
    ...(o.before ?? []),
    kind === 'branch'
      ? `git checkout -q${f} -B ${quote(name)} "$hs_c" || ${fail}\ngit branch -q --set-upstream-to=${quote(`origin/${name}`)} ${quote(name)} 2>/dev/null || :`
      : `git -c advice.detachedHead=false checkout -q${f} --detach "$hs_c" || ${fail}`,
    'echo "$hs_c"',
  ];
}

/** Shell (as the runner): the clone made in the prepared, empty dest and checked out at the target. */
export function cloneScript(p: GitParams, undo: GitUndo, t: Target): string {
  const depth = p.depth ? ` --depth ${p.depth}` : '';
  const branch = t.kind === 'commit' ? '' : ` --branch ${quote(t.name)}`;
  return [
    GIT_ENV,
    withSafePath(
      [
        enterScript(p.dest),
        `git clone -q --no-checkout${depth}${branch} -- ${quote(p.repo)} . || exit 1`,
        ...fetchLines(p, undo, t.kind, t.name),
        ...checkoutLines(undo, t.kind, t.name),
        ...(p.group ? [`chgrp -R -h -- ${quote(p.group)} . >&2 || exit 1`] : []),
      ].join('\n'),
    ),
  ].join('\n');
}

/**
 * Shell: the local modifications force is about to throw away kept under `ref` first (a stash
 * commit on HEAD, made under hostsmith's own name so no identity need be configured), and the ref
 * deleted again when the checkout fails.
 */
function keepLines(ref: string): { before: string[]; failed: string } {
  const who = 'GIT_AUTHOR_NAME=hostsmith GIT_AUTHOR_EMAIL=hostsmith@localhost GIT_COMMITTER_NAME=hostsmith GIT_COMMITTER_EMAIL=hostsmith@localhost';
  return {
    before: [`hs_st=$(${who} git stash create) || exit 1`, `[ -z "$hs_st" ] || git update-ref ${ref} "$hs_st" || exit 1`],
    failed: `git update-ref -d ${ref} 2>/dev/null`,
  };
}

/** Shell, in dest: stop unless the folder and its .git are the user's running git (never git in another user's clone). */
const OWN_CLONE = `hs_me=$(id -un) && [ ! -L .git ] && [ "$(stat -c %U -- .)" = "$hs_me" ] && [ "$(stat -c %U -- .git)" = "$hs_me" ] || hs_fail "$(pwd -P) is not a clone of $hs_me's (the folder or its .git is another user's, or .git is a link); git is not run in it"`;

/** Shell (as the runner): a clone held to the state it was planned from, fetched if need be, and moved to the target. */
export function moveScript(p: GitParams, undo: Extract<GitUndo, { clone: 'moved' }>, t: Target): string {
  const ref = undo.branch === null ? '' : `refs/heads/${undo.branch}`;
  return [
    GIT_ENV,
    withSafePath(
      [
        enterScript(p.dest),
        OWN_CLONE,
        `[ "$(git rev-parse -q --verify HEAD)" = ${undo.head} ] && [ "$(git symbolic-ref -q HEAD)" = ${quote(ref)} ] || hs_fail ${quote(`${p.dest} is no longer at ${short(undo.head)} (${undo.branch ?? 'detached'}) as planned; nothing was changed: make a new plan`)}`,
        ...(p.force
          ? []
          : [`[ -z "$(git status --porcelain --untracked-files=no)" ] || hs_fail ${quote(`${p.dest} has local modifications now; nothing was changed: commit or discard them, or set force: true`)}`]),
        ...fetchLines(p, undo, t.kind, t.name),
        ...checkoutLines(undo, t.kind, t.name, { force: p.force, ...(undo.kept ? keepLines(undo.kept) : {}) }),
      ].join('\n'),
    ),
  ].join('\n');
}

/**
 * Shell (root, or the step's user): the clone the step made removed, and the folders made for it
 * (deepest first, each only when empty); a dest that was an empty folder is emptied and given back
 * its owner and mode. Safe to run again; a dest already gone is nothing to do.
 */
export function removeCloneScript(undo: Extract<GitUndo, { clone: 'made' }>): string {
  if (!undo.dirs.length) {
    const d = undo.dir;
    return withSafePath(
      [
        enterScript(undo.dest, { missingOk: true }),
        'find . -mindepth 1 -maxdepth 1 -exec rm -rf -- {} + || exit 1',
        ...(d ? [`hs_meta . ${d.mode.toString(8).padStart(4, '0')} ${quote(`${d.owner}:${d.group}`)} || exit $?`] : []),
      ].join('\n'),
    );
  }
  const [dest, ...above] = [...undo.dirs].reverse();
  return withSafePath([inParent(dest!, 'rm -rf -- $n || exit 1'), ...above.map(rmdirLine)].join('\n'));
}

/** Shell: `act` (with $n the quoted last component) in the folder above `path`, entered safely; nothing when that folder is gone. */
function inParent(path: string, act: string): string {
  const { dir, base } = splitPath(path);
  return `( ${enterScript(dir, { missingOk: true })}\n${act.replaceAll('$n', quote(base))}\n) || exit $?`;
}

const rmdirLine = (d: string) =>
  inParent(d, `if [ -d $n ] && [ ! -L $n ]; then rmdir -- $n 2>/dev/null || printf '%s\\n' ${quote(`hostsmith: left ${d} in place: it holds what the step did not put there`)} >&2; fi`);

/** Shell: folders a failed apply made removed again, deepest first, each only when empty. */
function removeDirsScript(dirs: string[]): string {
  return withSafePath([...dirs].reverse().map(rmdirLine).join('\n'));
}

/**
 * Shell (as the runner): a moved clone put back — the commit it was at checked out, the branch the
 * step moved put back (or deleted, when the step made it), HEAD on the branch it was on. Safe to run again.
 */
export function restoreCloneScript(undo: Extract<GitUndo, { clone: 'moved' }>): string {
  const lines = [enterScript(undo.dest), OWN_CLONE, `git -c advice.detachedHead=false checkout -q --detach ${undo.head} || exit 1`];
  if (undo.ref) {
    const r = quote(`refs/heads/${undo.ref.name}`);
    lines.push(undo.ref.sha ? `git update-ref ${r} ${undo.ref.sha} || exit 1` : `if git rev-parse -q --verify ${r} >/dev/null; then git branch -q -D -- ${quote(undo.ref.name)} || exit 1; fi`);
  }
  if (undo.branch !== null) lines.push(`git symbolic-ref HEAD ${quote(`refs/heads/${undo.branch}`)} || exit 1`);
  // The local modifications force threw away, on the commit they were made on.
  if (undo.kept) lines.push(`if git rev-parse -q --verify ${undo.kept} >/dev/null; then git stash apply -q --index ${undo.kept} >&2 && git update-ref -d ${undo.kept} || exit 1; fi`);
  return [GIT_ENV, withSafePath(lines.join('\n'))].join('\n');
}

/** The sh the lockout watchdog runs (as root): a restore runs as the user git ran as, with that user's HOME. */
export function hostRollbackScript(undo: GitUndo): string {
  if (undo.clone === 'made') return removeCloneScript(undo);
  const script = restoreCloneScript(undo);
  const end = `HOSTSMITH_GIT_EOF`;
  const run = `sh -c 'eval "$(cat <&3)"' 3<<'${end}'\n${script}\n${end}`;
  if (undo.runner === 'root') return run;
  const u = quote(undo.runner);
  return `HOME=$(getent passwd ${u} | cut -d: -f6) runuser -u ${u} -- ${run}`;
}

function targetOf(p: GitParams, undo: GitUndo, s: GitState): Target {
  const t = resolveTarget(p, s);
  if (t.sha !== undo.to) throw new StepError(`${named(t)} is now at ${short(t.sha)}, not at ${short(undo.to)} as planned; nothing was changed: make a new plan`);
  return t;
}

async function rollbackGit(ctx: StepContext, p: GitParams, undo: GitUndo): Promise<void> {
  const script = undo.clone === 'made' ? removeCloneScript(undo) : restoreCloneScript(undo);
  const r = await ctx.exec(script, undo.clone === 'made' ? {} : asRunner(p));
  if (r.code !== 0) {
    const what = undo.clone === 'made' ? `removing the clone ${undo.dest}` : `putting ${undo.dest} back at ${short(undo.head)} (${undo.branch ?? 'detached'})`;
    throw new StepError(`${what} failed (exit ${r.code}): ${tail(r.stderr) || tail(r.stdout, 5)}`, { code: r.code, stderr: r.stderr });
  }
}

function undoSummary(u: UndoData): string {
  const dest = str(u, 'dest') ?? '?';
  if (u.clone === 'made') {
    const dirs = Array.isArray(u.dirs) ? u.dirs.length : 0;
    if (!dirs) return `empty ${dest} again (it was an empty folder before the clone)`;
    return `remove the clone ${dest}${dirs > 1 ? ` and the ${dirs - 1} folder${dirs > 2 ? 's' : ''} made above it` : ''}`;
  }
  const ref = u.ref && typeof u.ref === 'object' ? (u.ref as UndoData) : undefined;
  const refText = ref ? (typeof ref.sha === 'string' ? `, branch ${str(ref, 'name')} back to ${short(ref.sha)}` : `, delete the branch ${str(ref, 'name')} it made`) : '';
  const kept = str(u, 'kept') ? ', and the local modifications it threw away applied again' : '';
  return `check ${dest} out at ${short(str(u, 'head'))} again (${str(u, 'branch') ? `on branch ${str(u, 'branch')}` : 'detached'})${refText}${kept}`;
}

function undoMismatch(p: GitParams, u: UndoData): string | undefined {
  if (u.dest !== p.dest) return `its undo data is for ${JSON.stringify(u.dest)}, not the step's ${p.dest}`;
  if (typeof u.runner !== 'string' || (u.runner !== '' && ownerName('user').safeParse(u.runner).success === false)) return 'its undo data names no user git ran as';
  if (u.clone === 'made') {
    const dirs = Array.isArray(u.dirs) ? u.dirs : [];
    const bad = dirs.find((d) => typeof d !== 'string' || !(d === p.dest || p.dest.startsWith(`${d}/`)) || d === '/');
    if (bad !== undefined) return `its undo data would remove the folder ${JSON.stringify(bad)}, which is neither ${p.dest} nor above it`;
    if (dirs.length && dirs[dirs.length - 1] !== p.dest) return `its undo data does not end its folders with ${p.dest}`;
    return undefined;
  }
  if (u.clone !== 'moved') return 'its undo data says neither that the clone was made nor that it was moved';
  if (typeof u.head !== 'string' || !SHA.test(u.head)) return `its undo data names no commit to go back to (${JSON.stringify(u.head)})`;
  if (u.branch !== null && (typeof u.branch !== 'string' || versionProblem(u.branch))) return `its undo data names a branch git cannot have (${JSON.stringify(u.branch)})`;
  if (u.kept !== undefined && (typeof u.kept !== 'string' || !KEPT_REF.test(u.kept))) return `its undo data names a ref hostsmith does not keep (${JSON.stringify(u.kept)})`;
  if (u.ref !== undefined) {
    const ref = u.ref as UndoData;
    if (!ref || typeof ref.name !== 'string' || versionProblem(ref.name) || !(ref.sha === null || (typeof ref.sha === 'string' && SHA.test(ref.sha))))
      return `its undo data names a branch or commit git cannot have (${JSON.stringify(u.ref)})`;
  }
  return undefined;
}

export const gitStep: StepType<GitParams, GitState, GitUndo> = {
  type: 'git',
  schema: gitSchema,
  check: checkGit,
  plan: planGit,
  async apply(ctx, p, plan, s) {
    const undo = plan.undo;
    if (!undo) return {};
    const t = targetOf(p, undo, s);
    const fail = (r: { code: number; stderr: string; stdout: string }, what: string) =>
      new StepError(`${what} failed (exit ${r.code})${tail(r.stderr) || tail(r.stdout, 5) ? `: ${tail(r.stderr) || tail(r.stdout, 5)}` : ''}`, { code: r.code, stderr: r.stderr });
    if (undo.clone === 'moved') {
      const r = await ctx.exec(moveScript(p, undo, t), asRunner(p));
      if (r.code !== 0) throw fail(r, `moving ${p.dest} to ${named(t)}`);
      return {};
    }
    const made = await ctx.exec(prepareDestScript(p));
    if (made.code !== 0) {
      // The folders it made on the way go again (only when still empty) before the failure is reported.
      if (undo.dirs.length) await ctx.exec(removeDirsScript(undo.dirs)).catch(() => undefined);
      throw fail(made, `making ${p.dest} for the clone`);
    }
    const r = await ctx.exec(cloneScript(p, undo, t), asRunner(p));
    if (r.code !== 0) {
      const back = await ctx.exec(removeCloneScript(undo)).catch((e: Error) => ({ code: 1, stderr: e.message, stdout: '' }));
      const left = back.code !== 0 ? `; removing what it made failed too (${tail(back.stderr)}): remove ${p.dest} by hand` : '';
      throw new StepError(`${fail(r, `cloning ${p.repo} into ${p.dest}`).message}${left}`, { code: r.code, stderr: r.stderr });
    }
    return {};
  },
  rollback: rollbackGit,
  hostRollback: (_p, undo) => hostRollbackScript(undo),
  stateKey: (_p, s) => ({
    git: s.git,
    runner: s.runner,
    dest: s.dest,
    missing: s.missing,
    dir: s.dir,
    foreignOwner: s.foreignOwner,
    head: s.head,
    branch: s.branch,
    origin: s.origin,
    branches: s.branches,
    changed: s.changed,
  }),
  footprint(p): Footprint {
    const reads = [`path:${p.dest}`, 'pkg:git', ...(p.repo.startsWith('/') ? [`path:${p.repo}`] : []), ...(p.owner ? [`user:${p.owner}`] : []), ...(p.group ? [`group:${p.group}`] : [])];
    return { reads, writes: [`path:${p.dest}`] };
  },
  wrote: (p, undo) => (undo?.clone === 'made' ? undo.dirs.filter((d) => d !== p.dest).map((d) => `path:${d}`) : []),
  undoSummary,
  undoMismatch,
  runsAs: (p) => p.owner || undefined,
};
