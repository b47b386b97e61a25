import { z } from 'zod';
import { accountsText, compact } from '../undo-text.js';
import { StepError } from '../../errors.js';
import { quote } from '../../shell/script.js';
import { answerOf, guardScript, remember, runOneExec } from '../../shell/one-exec.js';
import {
  accountBackupDir,
  accountChangeError,
  accountName,
  backupAccountsScript,
  flag,
  idNumber,
  restoreAccounts,
  restoreAccountsScript,
  touchedItems,
  ACCOUNT_WRITES,
  accountGone,
  type AccountUndo,
} from '../accounts.js';
import { backupMismatch, type Plan, type StepContext, type StepType } from '../step.js';

export const groupSchema = z
  .object({
    name: accountName('group'),
    gid: idNumber.optional(),
    system: flag.optional(),
    state: z.enum(['present', 'absent']).default('present'),
  })
  .strict()
  .superRefine((p, ctx) => {
    for (const k of ['gid', 'system'] as const) {
      if (p.state === 'absent' && p[k] !== undefined) ctx.addIssue({ code: z.ZodIssueCode.custom, message: `${k} makes no sense with state: absent`, path: [k] });
    }
  });

export type GroupParams = z.output<typeof groupSchema>;

export interface GroupState {
  group: { gid: number; members: string[] } | null;
  /** The group that already has the wanted gid, if another one does. */
  gidOwner: string | null;
  /** Users whose primary group this is. */
  primaryOf: string[];
}

export type GroupUndo = AccountUndo;

export function checkScript(p: GroupParams): string {
  return [
    `n=${quote(p.name)}`,
    `g=$(getent group "$n") && echo "group $g"`,
    ...(p.gid !== undefined ? [`o=$(getent group ${p.gid}) && echo "gidowner $o"`] : []),
    // Whose primary group it is matters only to a removal or a gid change (plan): no scan of every
    // account otherwise. The gid is cut by the shell, not by a cut process: a read's processes are
    // what a no-op costs the host.
    ...(p.state === 'absent' || p.gid !== undefined
      ? [`if [ -n "$g" ]; then gid=\${g#*:*:}; gid=\${gid%%:*}; ${p.state === 'absent' ? '' : `[ "$gid" = ${p.gid} ] || `}getent passwd | awk -F: -v g="$gid" '$4 == g { print "primaryof " $1 }'; fi`]
      : []),
    'exit 0',
  ].join('\n');
}

export function parseGroupCheck(out: string): GroupState {
  const s: GroupState = { group: null, gidOwner: null, primaryOf: [] };
  for (const line of out.split('\n')) {
    const sp = line.indexOf(' ');
    const [key, rest] = sp < 0 ? [line, ''] : [line.slice(0, sp), line.slice(sp + 1)];
    const f = rest.split(':');
    if (key === 'group') s.group = { gid: Number(f[2]), members: (f[3] ?? '').split(',').filter(Boolean) };
    else if (key === 'gidowner') s.gidOwner = f[0] ?? null;
    else if (key === 'primaryof') s.primaryOf.push(rest);
  }
  return s;
}

const unchanged = (summary: string): Plan<GroupUndo> => ({ changed: false, summary, undo: null });

/** The groupadd/groupmod/groupdel command for (params, state); '' when nothing changes. */
export function groupCommand(p: GroupParams, s: GroupState): string {
  const n = quote(p.name);
  if (p.state === 'absent') return s.group ? `groupdel -- ${n}` : '';
  if (!s.group) return `groupadd ${p.system ? '-r ' : ''}${p.gid !== undefined ? `-g ${p.gid} ` : ''}-- ${n}`;
  return p.gid !== undefined && p.gid !== s.group.gid ? `groupmod -g ${p.gid} -- ${n}` : '';
}

export const groupStep: StepType<GroupParams, GroupState, GroupUndo> = {
  type: 'group',
  schema: groupSchema,
  async check(ctx, p) {
    const r = await ctx.exec(checkScript(p));
    if (r.code !== 0) throw new StepError(`cannot read group ${p.name}: ${r.stderr.trim() || `exit ${r.code}`}`, { code: r.code, stderr: r.stderr });
    // Kept with the state: apply holds the group to it (guard.ts).
    return remember(parseGroupCheck(r.stdout), r.stdoutRaw);
  },
  guarded: true,
  plan(p, s, env) {
    const backup = accountBackupDir(env);
    const name = p.name;
    const g = s.group;
    const members = (m: string[]) => (m.length ? `members ${m.join(', ')}` : 'no members');
    if (p.state === 'absent') {
      if (!g) return unchanged(`group ${name} is absent`);
      if (s.primaryOf.length) throw new StepError(`group ${name} is the primary group of ${s.primaryOf.join(', ')}; remove or change ${s.primaryOf.length > 1 ? 'those users' : 'that user'} first`);
      return { changed: true, action: 'remove', summary: `remove group ${name} (gid ${g.gid}, ${members(g.members)})`, undo: { backup, touched: { group: [name], gshadow: [name] } } };
    }
    if (p.gid !== undefined && s.gidOwner && s.gidOwner !== name) throw new StepError(`gid ${p.gid} is already used by group ${s.gidOwner}`);
    if (!g) {
      const what = [...(p.gid !== undefined ? [`gid ${p.gid}`] : []), ...(p.system ? ['system'] : [])];
      return { changed: true, action: 'create', summary: `create group ${name}${what.length ? ` (${what.join(', ')})` : ''}`, undo: { backup, touched: { group: [name], gshadow: [name] } } };
    }
    if (p.gid === undefined || p.gid === g.gid) return unchanged(`group ${name} is as wanted (gid ${g.gid})`);
    // groupmod -g moves the users whose primary group it is along (their passwd gid field).
    const users = s.primaryOf.length ? `; primary group of ${s.primaryOf.join(', ')}, whose gid follows` : '';
    return {
      changed: true,
      summary: `modify group ${name}: gid ${g.gid} → ${p.gid}${users}`,
      undo: { backup, touched: { group: [name], gshadow: [name], ...(s.primaryOf.length ? { passwd: s.primaryOf } : {}) } },
    };
  },
  /** One exec: held to what the check read, the account files backed up, the change, the group read back. */
  async apply(ctx: StepContext, p, plan, s) {
    const cmd = groupCommand(p, s);
    const raw = answerOf(s);
    const backup = plan.undo!.backup;
    const { r, failed } = await runOneExec(
      ctx,
      {
        ...(raw ? { guard: guardScript(checkScript(p), raw) } : {}),
        stages: [
          { name: 'backup', script: backupAccountsScript(ctx, backup) },
          { name: 'change', script: cmd },
        ],
        read: checkScript(p),
      },
      `group ${p.name} changed after it was read`,
    );
    if (!failed) return { state: parseGroupCheck(r.stdout) };
    if (failed.stage === 'read') return {};
    throw accountChangeError(failed, r.stdout, r.stderr, backup, cmd);
  },
  rollback: (ctx, _p, undo) => restoreAccounts(ctx, undo),
  hostRollback: (_p, undo) => restoreAccountsScript(undo),
  undoSummary: (u) => accountsText(u) ?? compact(u),
  undoMismatch: (p, u) => {
    const groups = (u.touched as { group?: unknown } | undefined)?.group;
    if (!Array.isArray(groups) || groups.some((g) => g !== p.name)) return `its undo data puts back groups ${JSON.stringify(groups)}, not only ${p.name}`;
    return backupMismatch(u.backup);
  },
  // Members are part of a group's state: a user step that joins it writes it too.
  footprint: (p) => ({ reads: [`group:${p.name}`], writes: [`group:${p.name}`, ...ACCOUNT_WRITES] }),
  wrote: (_p, undo) => touchedItems(undo),
  gone: (ctx, p) => accountGone(ctx, 'group', p.name),
};
