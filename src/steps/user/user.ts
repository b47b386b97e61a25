import { posix } from 'node:path';
import { accountsText, compact, names } from '../undo-text.js';
import { z } from 'zod';
import { MovedError, answerOf, guardFirst, guardScript, remember, runOneExec } from '../../shell/one-exec.js';
import { StepError } from '../../errors.js';
import { unifiedDiff } from '../../render/diff.js';
import { quote } from '../../shell/script.js';
import { backupMismatch, runOk, type ApplyResult } from '../step.js';
import {
  accountBackupDir,
  accountChangeError,
  accountName,
  backupAccounts,
  backupAccountsScript,
  flag,
  idNumber,
  passwdField,
  restoreAccounts,
  restoreAccountsScript,
  uniq,
  touchedItems,
  ACCOUNT_WRITES,
  accountGone,
  type AccountUndo,
  type Touched,
} from '../accounts.js';
import { backupPath, copyToBackup, restoreFromBackup, restoreScript } from '../backup.js';
import { fmtMode } from '../modes.js';
import { enterScript, withSafePath } from '../../shell/safe-path.js';
import { absolutePathProblem } from '../paths.js';
import { HIDDEN_OLD, type Plan, type PlanEnv, type StepContext, type StepType } from '../step.js';

const absPath = (what: string) =>
  passwdField(what).superRefine((v, ctx) => {
    const why = absolutePathProblem(v);
    if (why) ctx.addIssue({ code: z.ZodIssueCode.custom, message: why });
  });
const groupList = z.union([
  z.array(accountName('group')),
  z
    .string()
    .transform((s) =>
      s
        .split(',')
        .map((g) => g.trim())
        .filter(Boolean),
    )
    .pipe(z.array(accountName('group'))),
]);
const keyLine = z
  .string()
  .trim()
  .min(1, 'an authorized key cannot be empty')
  .refine((k) => !/[\r\n]/.test(k), 'one key per list item (no line breaks)');

const ONLY_PRESENT = ['uid', 'comment', 'shell', 'home', 'groups', 'append', 'system', 'create_home', 'authorized_keys'] as const;

export const userSchema = z
  .object({
    name: accountName('user'),
    state: z.enum(['present', 'absent']).default('present'),
    uid: idNumber.optional(),
    comment: passwdField('comment').optional(),
    shell: absPath('shell').optional(),
    home: absPath('home').optional(),
    /** Supplementary groups: exactly these, unless `append`. */
    groups: groupList.optional(),
    append: flag.optional(),
    system: flag.optional(),
    create_home: flag.optional(),
    remove_home: flag.optional(),
    authorized_keys: z.array(keyLine).optional(),
  })
  .strict()
  .superRefine((p, ctx) => {
    const issue = (k: string, message: string) => ctx.addIssue({ code: z.ZodIssueCode.custom, message, path: [k] });
    if (p.state === 'absent') {
      for (const k of ONLY_PRESENT) if (p[k] !== undefined) issue(k, `${k} makes no sense with state: absent`);
    } else if (p.remove_home !== undefined) issue('remove_home', 'remove_home is only for state: absent');
    if (p.append !== undefined && p.groups === undefined) issue('append', 'append needs groups');
  });

export type UserParams = z.output<typeof userSchema>;

interface Meta {
  mode: number;
  uid: number;
  gid: number;
  owner: string;
  group: string;
}
type Kind = 'dir' | 'file' | 'link' | 'other';
type PathStat = (Meta & { kind: Kind }) | { kind: Kind };

export interface UserEntry {
  uid: number;
  gid: number;
  comment: string;
  home: string;
  shell: string;
}

export interface UserState {
  user: UserEntry | null;
  /** Name of the user's primary group. */
  primaryGroup: string | null;
  /** Groups whose member list names the user (what usermod -G manages). */
  memberOf: string[];
  /** Wanted groups that do not exist. */
  missingGroups: string[];
  /** A group named like the user exists (useradd would refuse to create the private group). */
  sameNameGroup: boolean;
  /** `useradd -D`: where homes go and the default shell. */
  defaults: { home: string; shell: string };
  /** The home that counts: the wanted one, else the current one, else the default. */
  home: string;
  homeStat: PathStat | null;
  /** Ancestors of the home that do not exist (useradd -m would create them), outermost first. */
  homeMissing: string[];
  mail: boolean;
  /** Only read when authorized_keys are managed. */
  sshDir?: PathStat | null;
  keys?: (PathStat & { content?: Buffer }) | null;
}

export interface KeysUndo {
  dir: string;
  file: string;
  /** null: the step created it. */
  dirMeta: { mode: number; uid: number; gid: number } | null;
  fileMeta: { mode: number; uid: number; gid: number; contentBase64: string } | null;
}

export interface UserUndo {
  name: string;
  /** Account entries to put back from the backup copy of the account files. */
  accounts?: AccountUndo;
  /** Paths the step created (home, mail spool): removed. */
  remove?: string[];
  /** Paths the step removed: copied back from their backups. */
  restore?: Array<{ path: string; backup: string }>;
  keys?: KeysUndo;
}

export function checkScript(p: UserParams): string {
  const wanted = p.state === 'present' ? (p.groups ?? []) : [];
  return [
    `n=${quote(p.name)}; wh=${quote(p.home ?? '')}`,
    // Fields are cut with the shell's own expansions, and useradd -D asked once: each process a
    // read starts is most of what a no-op costs the host.
    "hs_nl='\n'",
    'hs_d=$hs_nl$(useradd -D 2>/dev/null)$hs_nl',
    `dhome=; case $hs_d in *"\${hs_nl}HOME="*) dhome=\${hs_d#*"\${hs_nl}HOME="}; dhome=\${dhome%%"$hs_nl"*};; esac; dhome=\${dhome:-/home}`,
    `dshell=; case $hs_d in *"\${hs_nl}SHELL="*) dshell=\${hs_d#*"\${hs_nl}SHELL="}; dshell=\${dshell%%"$hs_nl"*};; esac; echo "defaults $dhome \${dshell:-/bin/sh}"`,
    `hs_pg=; pw=$(getent passwd "$n") && printf 'passwd %s\\n' "$pw" && hs_f=\${pw#*:*:*:} && hs_pg=\${hs_f%%:*}`,
    // Every group from one `getent group`, cut by the shell: the primary group, the groups naming
    // the user, and which names exist. A lookup per name (and an awk) was four processes and more
    // on every read. A name the listing lacks is still looked up on its own: some directories
    // (LDAP, sssd) list only part of their groups.
    'hs_all=$(getent group); hs_names=$hs_nl; hs_prim=',
    'while IFS= read -r hs_l; do',
    '  case $hs_l in *:*:*:*) ;; *) continue;; esac',
    '  hs_gn=${hs_l%%:*}; hs_r=${hs_l#*:*:}; hs_gid=${hs_r%%:*}; hs_m=${hs_r#*:}; hs_names=$hs_names$hs_gn$hs_nl',
    '  [ -z "$hs_prim" ] && [ -n "$hs_pg" ] && [ "$hs_gid" = "$hs_pg" ] && hs_prim=$hs_l',
    '  case ,$hs_m, in *,"$n",*) printf \'member %s\\n\' "$hs_gn";; esac',
    'done <<HS_GROUPS',
    '$hs_all',
    'HS_GROUPS',
    `if [ -n "$hs_pg" ]; then [ -n "$hs_prim" ] || hs_prim=$(getent group "$hs_pg"); [ -n "$hs_prim" ] && printf 'primary %s\\n' "$hs_prim"; fi`,
    `case $hs_names in *"$hs_nl$n$hs_nl"*) echo samegroup;; *) getent group "$n" >/dev/null && echo samegroup;; esac`,
    ...(wanted.length ? [`for g in ${wanted.map(quote).join(' ')}; do case $hs_names in *"$hs_nl$g$hs_nl"*) ;; *) getent group "$g" >/dev/null || echo "nogroup $g";; esac; done`] : []),
    `h=$wh; if [ -z "$h" ]; then if [ -n "$pw" ]; then hs_f=\${pw#*:*:*:*:*:}; h=\${hs_f%%:*}; else h="$dhome/$n"; fi; fi; printf 'home %s\\n' "$h"`,
    `st() { if [ -L "$2" ]; then echo "$1 link"; elif [ -d "$2" ]; then echo "$1 dir $(stat -c '%a %u %g %U %G' -- "$2")"; elif [ -f "$2" ]; then echo "$1 file $(stat -c '%a %u %g %U %G' -- "$2")"; elif [ -e "$2" ]; then echo "$1 other"; fi; }`,
    `st homedir "$h"`,
    // The folder above an absolute home by the shell's own expansion (one process fewer per read).
    `case $h in ""|*//*|*/|[!/]*) d=$(dirname -- "$h");; *) d=\${h%/*}; d=\${d:-/};; esac; while [ ! -e "$d" ] && [ "$d" != / ]; do printf 'missing %s\\n' "$d"; d=$(dirname -- "$d"); done`,
    `[ -e "/var/mail/$n" ] && echo mail`,
    ...(p.state === 'present' && p.authorized_keys !== undefined
      ? [
          `st sshdir "$h/.ssh"`,
          `st keys "$h/.ssh/authorized_keys"`,
          `[ -f "$h/.ssh/authorized_keys" ] && ! [ -L "$h/.ssh/authorized_keys" ] && echo "content $(base64 -w0 < "$h/.ssh/authorized_keys")"`,
        ]
      : []),
    'exit 0',
  ].join('\n');
}

function parseStat(rest: string): PathStat {
  const [kind, mode, uid, gid, owner, group] = rest.split(' ');
  if (mode === undefined) return { kind: kind as Kind };
  return { kind: kind as Kind, mode: parseInt(mode, 8), uid: Number(uid), gid: Number(gid), owner: owner ?? '', group: group ?? '' };
}

export function parseUserCheck(out: string, p: Pick<UserParams, 'state' | 'authorized_keys'>): UserState {
  const s: UserState = {
    user: null,
    primaryGroup: null,
    memberOf: [],
    missingGroups: [],
    sameNameGroup: false,
    defaults: { home: '/home', shell: '/bin/sh' },
    home: '',
    homeStat: null,
    homeMissing: [],
    mail: false,
  };
  const keys = p.state === 'present' && p.authorized_keys !== undefined;
  if (keys) {
    s.sshDir = null;
    s.keys = null;
  }
  let content: Buffer | undefined;
  for (const line of out.split('\n')) {
    const sp = line.indexOf(' ');
    const key = sp < 0 ? line : line.slice(0, sp);
    const rest = sp < 0 ? '' : line.slice(sp + 1);
    switch (key) {
      case 'defaults': {
        const [home, shell] = rest.split(' ');
        s.defaults = { home: home || '/home', shell: shell || '/bin/sh' };
        break;
      }
      case 'passwd': {
        const f = rest.split(':');
        s.user = { uid: Number(f[2]), gid: Number(f[3]), comment: f[4] ?? '', home: f[5] ?? '', shell: f[6] ?? '' };
        break;
      }
      case 'primary':
        s.primaryGroup = rest.split(':')[0] ?? null;
        break;
      case 'samegroup':
        s.sameNameGroup = true;
        break;
      case 'member':
        s.memberOf.push(rest);
        break;
      case 'nogroup':
        s.missingGroups.push(rest);
        break;
      case 'home':
        s.home = rest;
        break;
      case 'homedir':
        s.homeStat = parseStat(rest);
        break;
      case 'missing':
        s.homeMissing.unshift(rest);
        break;
      case 'mail':
        s.mail = true;
        break;
      case 'sshdir':
        if (keys) s.sshDir = parseStat(rest);
        break;
      case 'keys':
        if (keys) s.keys = parseStat(rest);
        break;
      case 'content':
        content = Buffer.from(rest, 'base64');
        break;
    }
  }
  if (s.keys && content) s.keys.content = content;
  return s;
}

export function wantedKeys(keys: string[]): Buffer {
  return Buffer.from(keys.length ? `${keys.join('\n')}\n` : '');
}

const hasMeta = (st: PathStat | null | undefined): st is Meta & { kind: Kind } => !!st && 'mode' in st;

function keyLines(b: Buffer | undefined): string[] {
  return (b?.toString('utf8') ?? '').split('\n').filter((l) => l.trim());
}

interface KeysPlan {
  changes: string[];
  diff: string;
  undo: KeysUndo;
}

/** What authorized_keys needs: content, then .ssh 0700 and the file 0600, both owned by the user. */
function planKeys(p: UserParams, s: UserState, owner: { uid: number; gid: number; name: string; group: string } | null): KeysPlan | null {
  if (p.authorized_keys === undefined) return null;
  const dir = posix.join(s.home, '.ssh');
  const file = posix.join(dir, 'authorized_keys');
  if (s.sshDir && s.sshDir.kind !== 'dir') throw new StepError(`${dir} is a ${s.sshDir.kind === 'link' ? 'symbolic link' : 'not a directory'}; refusing to write authorized_keys through it`);
  if (s.keys && s.keys.kind !== 'file') throw new StepError(`${file} is a ${s.keys.kind === 'link' ? 'symbolic link' : 'not a regular file'}; refusing to replace it`);
  if (!s.homeStat && !(s.user === null && p.create_home !== false)) throw new StepError(`home ${s.home} of user ${p.name} does not exist; cannot manage its authorized_keys`);
  const want = wantedKeys(p.authorized_keys);
  const cur = s.keys?.content ?? null;
  const changes: string[] = [];
  if (!s.keys) changes.push(`create ${file} (${p.authorized_keys.length} key${p.authorized_keys.length === 1 ? '' : 's'})`);
  else if (!want.equals(cur ?? Buffer.alloc(0))) {
    const before = keyLines(cur ?? undefined);
    const after = keyLines(want);
    changes.push(`authorized_keys +${after.filter((k) => !before.includes(k)).length} -${before.filter((k) => !after.includes(k)).length}`);
  }
  if (owner) {
    const meta = (label: string, st: PathStat | null | undefined, mode: number) => {
      if (!hasMeta(st)) return;
      if (st.mode !== mode) changes.push(`${label} mode ${fmtMode(st.mode)} → ${fmtMode(mode)}`);
      if (st.uid !== owner.uid || st.gid !== owner.gid) changes.push(`${label} owner ${st.owner}:${st.group} → ${owner.name}:${owner.group}`);
    };
    meta(dir, s.sshDir, 0o700);
    meta(file, s.keys, 0o600);
  }
  return {
    changes,
    diff: unifiedDiff(file, cur, want),
    undo: {
      dir,
      file,
      dirMeta: hasMeta(s.sshDir) ? { mode: s.sshDir.mode, uid: s.sshDir.uid, gid: s.sshDir.gid } : null,
      fileMeta: hasMeta(s.keys) ? { mode: s.keys.mode, uid: s.keys.uid, gid: s.keys.gid, contentBase64: (cur ?? Buffer.alloc(0)).toString('base64') } : null,
    },
  };
}

const mail = (name: string) => `/var/mail/${name}`;
const userFiles = (name: string): Touched => ({ passwd: [name], shadow: [name], subuid: [name], subgid: [name] });
const list = (xs: string[]) => xs.join(', ');
const unchanged = (summary: string): Plan<UserUndo> => ({ changed: false, summary, undo: null });

/**
 * A dry run cannot see groups an earlier step of the same recipe would create, so the plan only
 * notes them; apply refuses if they are still missing then.
 */
function notYet(s: UserState, groups: string[]): string {
  const missing = s.missingGroups.filter((g) => groups.includes(g));
  return missing.length ? ` (not there yet: ${list(missing)})` : '';
}

function assertGroupsExist(p: UserParams, s: UserState): void {
  const missing = s.missingGroups.filter((g) => (p.groups ?? []).includes(g) && !s.memberOf.includes(g));
  if (missing.length) {
    const many = missing.length > 1;
    throw new StepError(`group${many ? 's' : ''} ${list(missing)} do${many ? '' : 'es'} not exist (create ${many ? 'them' : 'it'} with a group step before this one)`);
  }
}

/** How a present user differs from the wanted one; [] when it does not. */
function userChanges(p: UserParams, u: UserEntry, s: UserState, sensitive = false) {
  if (p.uid !== undefined && p.uid !== u.uid) {
    throw new StepError(`user ${p.name} exists with uid ${u.uid}, not ${p.uid}; hostsmith does not change the uid of an existing user (files would need re-owning)`);
  }
  const fields: string[] = [];
  const usermod: string[] = [];
  if (p.shell !== undefined && p.shell !== u.shell) {
    fields.push(`shell ${u.shell} → ${p.shell}`);
    usermod.push('-s', p.shell);
  }
  if (p.home !== undefined && p.home !== u.home) {
    fields.push(`home ${u.home} → ${p.home}`);
    usermod.push('-d', p.home);
  }
  if (p.comment !== undefined && p.comment !== u.comment) {
    // The comment read from the host may hold the secret's previous value, which no mask knows.
    fields.push(`comment ${sensitive ? HIDDEN_OLD : JSON.stringify(u.comment)} → ${JSON.stringify(p.comment)}`);
    usermod.push('-c', p.comment);
  }
  const wanted = uniq(p.groups ?? []);
  const added = p.groups ? wanted.filter((g) => !s.memberOf.includes(g)) : [];
  const removed = p.groups && !p.append ? s.memberOf.filter((g) => !wanted.includes(g)) : [];
  if (added.length || removed.length) {
    fields.push(`groups ${[...added.map((g) => `+${g}`), ...removed.map((g) => `-${g}`)].join(' ')}${notYet(s, added)}`);
    usermod.push(...(p.append ? ['-a', '-G', added.join(',')] : ['-G', wanted.join(',')]));
  }
  return { fields, usermod, groups: [...added, ...removed], passwd: usermod.some((a) => ['-s', '-d', '-c'].includes(a)) };
}

const ownerOf = (u: UserEntry, name: string, s: UserState) => ({ uid: u.uid, gid: u.gid, name, group: s.primaryGroup ?? String(u.gid) });

/** The pure decision for a user: what changes, and how to put it back. */
export function planUser(p: UserParams, s: UserState, env: PlanEnv): Plan<UserUndo> {
  const name = p.name;
  const backup = accountBackupDir(env);
  if (p.state === 'absent') {
    const u = s.user;
    if (!u) return unchanged(`user ${name} is absent`);
    const removeHome = p.remove_home !== false && hasMeta(s.homeStat) && s.homeStat.kind === 'dir' && s.homeStat.uid === u.uid && u.home !== '/';
    const restore = [...(removeHome ? [{ path: u.home, backup: backupPath(env, 'home') }] : []), ...(s.mail ? [{ path: mail(name), backup: backupPath(env, 'mail') }] : [])];
    const groups = uniq([...(s.sameNameGroup ? [name] : []), ...s.memberOf]);
    const home = removeHome ? `home ${u.home} with its contents` : `home ${u.home} kept`;
    return {
      changed: true,
      action: 'remove',
      summary: `remove user ${name} (uid ${u.uid}${s.memberOf.length ? `, groups ${list(s.memberOf)}` : ''}, ${home})`,
      undo: { name, accounts: { backup, touched: { ...userFiles(name), group: groups, gshadow: groups } }, restore },
    };
  }

  if (!s.user) {
    const createHome = p.create_home !== false && !s.homeStat;
    if (p.create_home !== false && s.homeStat && s.homeStat.kind !== 'dir') throw new StepError(`home ${s.home} exists and is not a directory`);
    const groups = uniq(p.groups ?? []);
    const keys = planKeys(p, s, null);
    const n = p.authorized_keys?.length ?? 0;
    const parts = [
      ...(p.uid !== undefined ? [`uid ${p.uid}`] : []),
      ...(p.system ? ['system'] : []),
      `shell ${p.shell ?? s.defaults.shell}`,
      `home ${s.home}${createHome ? '' : p.create_home === false ? ' (not created)' : ' (exists)'}`,
      ...(s.sameNameGroup ? [`primary group ${name} (exists)`] : []),
      ...(groups.length ? [`groups ${list(groups)}${notYet(s, groups)}`] : []),
      ...(p.comment ? [`comment ${JSON.stringify(p.comment)}`] : []),
      ...(p.authorized_keys !== undefined ? [`${n} authorized key${n === 1 ? '' : 's'}`] : []),
    ];
    const privateGroup = s.sameNameGroup ? [] : [name];
    return {
      changed: true,
      action: 'create',
      summary: `create user ${name} (${parts.join(', ')})`,
      diff: keys?.diff || undefined,
      undo: {
        name,
        accounts: { backup, touched: { ...userFiles(name), group: uniq([...privateGroup, ...groups]), gshadow: uniq([...privateGroup, ...groups]) } },
        remove: [...(createHome ? [s.homeMissing[0] ?? s.home] : []), ...(s.mail ? [] : [mail(name)])],
        ...(keys && !createHome ? { keys: keys.undo } : {}),
      },
    };
  }

  const u = s.user;
  const c = userChanges(p, u, s, env.sensitive);
  const keys = planKeys(p, s, ownerOf(u, name, s));
  const changes = [...c.fields, ...(keys?.changes ?? [])];
  if (!changes.length) return unchanged(`user ${name} is as wanted`);
  const touched: Touched = { ...(c.passwd ? { passwd: [name] } : {}), ...(c.groups.length ? { group: c.groups, gshadow: c.groups } : {}) };
  return {
    changed: true,
    summary: `modify user ${name}: ${changes.join(', ')}`,
    diff: keys?.diff || undefined,
    undo: {
      name,
      ...(Object.keys(touched).length ? { accounts: { backup, touched } } : {}),
      ...(keys?.changes.length ? { keys: keys.undo } : {}),
    },
  };
}

/** The useradd/usermod/userdel command a plan stands for ('' when only files change). */
export function accountCommand(p: UserParams, s: UserState): string {
  const q = (args: string[]) => args.map(quote).join(' ');
  if (p.state === 'absent') return s.user ? `userdel -- ${quote(p.name)}` : '';
  if (s.user) {
    const { usermod } = userChanges(p, s.user, s);
    return usermod.length ? `usermod ${q(usermod)} -- ${quote(p.name)}` : '';
  }
  const groups = uniq(p.groups ?? []);
  const args = [
    ...(p.system ? ['-r'] : []),
    ...(p.uid !== undefined ? ['-u', String(p.uid)] : []),
    ...(p.comment !== undefined ? ['-c', p.comment] : []),
    ...(p.shell !== undefined ? ['-s', p.shell] : []),
    '-d',
    s.home,
    p.create_home === false ? '-M' : '-m',
    ...(s.sameNameGroup ? ['-g', p.name] : []),
    ...(groups.length ? ['-G', groups.join(',')] : []),
  ];
  return `useradd ${q(args)} -- ${quote(p.name)}`;
}

/**
 * The usual change (useradd, usermod or userdel alone: no keys to write, no home to move) as one
 * exec, as group does it: held to what the check read, the account files backed up, the change,
 * the user read back for the journal's post-state.
 */
async function oneExecApply(ctx: StepContext, p: UserParams, s: UserState, undo: UserUndo, cmd: string): Promise<ApplyResult> {
  const raw = answerOf(s);
  const backup = undo.accounts?.backup;
  const { r, failed } = await runOneExec(
    ctx,
    {
      ...(raw ? { guard: guardScript(checkScript(p), raw) } : {}),
      stages: [...(backup ? [{ name: 'backup', script: backupAccountsScript(ctx, backup) }] : []), { name: 'change', script: cmd }],
      read: checkScript(p),
    },
    `user ${p.name} changed after it was read`,
  );
  if (!failed) return { state: parseUserCheck(r.stdout, p) };
  if (failed.stage === 'read') return {};
  const e = accountChangeError(failed, r.stdout, r.stderr, backup, cmd);
  if (failed.stage === 'backup') throw e;
  // The engine rolls back completed steps only: a half-done step undoes itself.
  try {
    await rollbackUser(ctx, undo);
  } catch (x) {
    throw new StepError(`${e.message}; undoing the partial change also failed: ${(x as Error).message}`, { cause: e });
  }
  throw e;
}

async function checkUser(ctx: StepContext, p: UserParams): Promise<UserState> {
  const r = await ctx.exec(checkScript(p));
  if (r.code !== 0) throw new StepError(`cannot read user ${p.name}: ${r.stderr.trim() || `exit ${r.code}`}`, { code: r.code, stderr: r.stderr });
  // Kept with the state: apply's first exec holds the user to it (guard.ts).
  return remember(parseUserCheck(r.stdout, p), r.stdoutRaw);
}

/**
 * authorized_keys and its .ssh folder sit in a home its user owns: the user could plant a link
 * there (~/.ssh -> /root/.ssh) or swap one in while we write. So the home is entered without
 * following such a link, .ssh is refused if it is one, and the file is written by its bare name
 * with operations that do not follow a link (safe-path.ts).
 */
function writeKeysScript(file: string, content: Buffer, mode: number, owner: string): string {
  const dir = posix.dirname(file);
  const home = posix.dirname(dir);
  return withSafePath(
    [
      enterScript(home),
      `if [ -L .ssh ] || [ -L .ssh/authorized_keys ]; then hs_refuse ${quote(dir)} 'it or its authorized_keys is a symbolic link'; exit $?; fi`,
      '[ -d .ssh ] || mkdir -- .ssh || exit 1',
      `hs_meta .ssh 0700 ${quote(owner)} || exit 1`,
      enterScript(dir),
      `printf %s ${quote(content.toString('base64'))} | base64 -d | hs_write authorized_keys ${fmtMode(mode)} ${quote(owner)} || exit 1`,
    ].join('\n'),
  );
}

function rollbackKeysScript(k: KeysUndo): string {
  const home = posix.dirname(k.dir);
  const script = k.fileMeta
    ? writeKeysScript(k.file, Buffer.from(k.fileMeta.contentBase64, 'base64'), k.fileMeta.mode, `${k.fileMeta.uid}:${k.fileMeta.gid}`)
    : withSafePath(`( ${enterScript(k.dir, { missingOk: true })}\nrm -f -- ${quote(posix.basename(k.file))}\n)`);
  // A .ssh folder the step created goes only if empty: anything else in it is not ours.
  const dir = k.dirMeta
    ? `( ${enterScript(home, { missingOk: true })}\n[ -L .ssh ] || [ ! -d .ssh ] || hs_meta .ssh ${fmtMode(k.dirMeta.mode)} ${k.dirMeta.uid}:${k.dirMeta.gid}\n)`
    : `( ${enterScript(home, { missingOk: true })}\n[ -L .ssh ] || rmdir -- .ssh 2>/dev/null; true\n)`;
  return `${script}\n${withSafePath(dir)}`;
}

async function rollbackKeys(ctx: StepContext, k: KeysUndo): Promise<void> {
  await runOk(ctx, rollbackKeysScript(k), `restoring ${k.file}`);
}

/** A path the step made (a home, a mail spool) removed from inside its folder, entered without following a planted link. */
function removeScript(path: string): string {
  return withSafePath(`${enterScript(posix.dirname(path), { missingOk: true })}\nrm -rf -- ${quote(posix.basename(path))}`);
}

/** rollbackUser as one host script, in the same order: keys, account entries, removed paths, restored paths. */
function rollbackUserScript(undo: UserUndo): string {
  const parts: string[] = [];
  // The keys script may `exit 0` early (a linked .ssh): it runs in its own subshell.
  if (undo.keys) parts.push(`( ${rollbackKeysScript(undo.keys)}\n ) || exit 1`);
  if (undo.accounts) parts.push(`( ${restoreAccountsScript(undo.accounts)}\n ) || exit 1`);
  for (const path of undo.remove ?? []) {
    if (!path.startsWith('/') || path === '/') continue;
    // A home the step made: removed from inside its parent, entered without following a planted link.
    parts.push(`( ${removeScript(path)}\n) || exit 1`);
  }
  for (const { path, backup } of undo.restore ?? []) parts.push(`${restoreScript(backup, path)} || exit 1`);
  return parts.join('\n') || 'true';
}

async function rollbackUser(ctx: StepContext, undo: UserUndo): Promise<void> {
  if (undo.keys) await rollbackKeys(ctx, undo.keys);
  if (undo.accounts) await restoreAccounts(ctx, undo.accounts);
  for (const path of undo.remove ?? []) {
    if (!path.startsWith('/') || path === '/') continue;
    await runOk(ctx, removeScript(path), `removing ${path}`);
  }
  for (const { path, backup } of undo.restore ?? []) {
    await restoreFromBackup(ctx, backup, path);
  }
}

export const userStep: StepType<UserParams, UserState, UserUndo> = {
  type: 'user',
  schema: userSchema,
  check: checkUser,
  guarded: true,
  plan: planUser,
  async apply(ctx0, p, plan, s) {
    const undo = plan.undo!;
    if (p.state === 'present') assertGroupsExist(p, s);
    const cmd0 = accountCommand(p, s);
    const keys = p.state === 'present' && p.authorized_keys !== undefined && (!s.user || planKeys(p, s, ownerOf(s.user, p.name, s))?.changes.length);
    if (cmd0 && !keys && !undo.restore?.length) return oneExecApply(ctx0, p, s, undo, cmd0);
    // Its first exec first reads the user again: moved since the check, nothing is done.
    const ctx = guardFirst(ctx0, checkScript(p), s, `user ${p.name} changed after it was read`);
    try {
      if (undo.accounts) await backupAccounts(ctx, undo.accounts.backup);
      for (const { path, backup } of undo.restore ?? []) {
        await copyToBackup(ctx, path, backup);
      }
      if (cmd0) await runOk(ctx, cmd0, cmd0.split(' ')[0]!);
      for (const { path } of undo.restore ?? []) await runOk(ctx, removeScript(path), `removing ${path}`);
      if (keys && p.authorized_keys !== undefined) {
        const want = wantedKeys(p.authorized_keys);
        await runOk(ctx, writeKeysScript(posix.join(s.home, '.ssh/authorized_keys'), want, 0o600, `${quote(p.name)}:`), `writing authorized_keys of ${p.name}`);
      }
    } catch (e) {
      if (e instanceof MovedError) throw e; // stopped before its first change: nothing to undo
      // The engine rolls back completed steps only: a half-done step undoes itself.
      try {
        await rollbackUser(ctx, undo);
      } catch (r) {
        throw new StepError(`${(e as Error).message}; undoing the partial change also failed: ${(r as Error).message}`, { cause: e });
      }
      throw e;
    }
    return {};
  },
  rollback: (ctx, _p, undo) => rollbackUser(ctx, undo),
  hostRollback: (_p, undo) => rollbackUserScript(undo),
  undoSummary: (u) => {
    const parts = [
      accountsText(u.accounts),
      names(u, 'remove').length ? `remove ${names(u, 'remove').join(', ')}` : '',
      Array.isArray(u.restore) && u.restore.length ? `restore ${(u.restore as Array<{ path?: unknown }>).map((r) => String(r.path)).join(', ')}` : '',
      u.keys && typeof u.keys === 'object' ? `put back ${String((u.keys as { file?: unknown }).file)}` : '',
    ].filter(Boolean);
    return parts.length ? parts.join('; ') : compact(u);
  },
  undoMismatch: (p, u) => {
    if (u.name !== p.name) return `its undo data is for user ${JSON.stringify(u.name)}, not ${p.name}`;
    // What it removes is what useradd made for this user: a home or mail spool named after it.
    const remove = Array.isArray(u.remove) ? u.remove : [];
    const stray = remove.find((x) => typeof x !== 'string' || (x !== p.home && !x.endsWith(`/${p.name}`)));
    if (stray !== undefined) return `its undo data would remove ${JSON.stringify(stray)}, which is not ${p.name}'s home or mail spool`;
    const keys = u.keys as { file?: unknown } | undefined;
    if (keys && (typeof keys.file !== 'string' || !keys.file.endsWith('/.ssh/authorized_keys'))) return `its undo data would write ${JSON.stringify(keys.file)}, which is not an authorized_keys file`;
    // What it restores is this user's home or mail spool, from the backups it kept of them, which
    // are named for what they hold (home, mail), not after the paths.
    const restore = Array.isArray(u.restore) ? (u.restore as Array<{ path?: unknown; backup?: unknown }>) : [];
    for (const r of restore) {
      const bad = backupMismatch(r.backup);
      if (bad) return bad;
      if (typeof r.path !== 'string' || (r.path !== p.home && !r.path.endsWith(`/${p.name}`)))
        return `its undo data would restore ${JSON.stringify(r.path)}, which is not ${p.name}'s home or mail spool`;
      if (!/\/(home|mail)$/.test(String(r.backup))) return `its backup ${String(r.backup)} is not a backup of a home or mail spool`;
    }
    return backupMismatch((u.accounts as { backup?: unknown } | undefined)?.backup);
  },
  footprint: (p) => {
    const home = p.home ? [`path:${p.home}`] : [`path:/home/${p.name}`];
    // Its private group, and the groups it joins or leaves: membership is the group's state too.
    const own = [`user:${p.name}`, `group:${p.name}`, ...home, `cron:${p.name}`, ...(p.groups ?? []).map((g: string) => `group:${g}`)];
    return { reads: own, writes: [...own, ...ACCOUNT_WRITES] };
  },
  wrote: (_p, undo) => touchedItems(undo?.accounts),
  gone: (ctx, p) => accountGone(ctx, 'user', p.name),
};
