import { CronExpressionParser } from 'cron-parser';
import { compact, str } from '../undo-text.js';
import cronstrue from 'cronstrue';
import { z } from 'zod';
import { StepError } from '../../errors.js';
import { cronProblem } from './schedule.js';
import { unifiedDiff } from '../../render/diff.js';
import { quote } from '../../shell/script.js';
import { backupDirsScript, backupPath } from '../backup.js';
import { answerOf, guardScript, remember, runOneExec } from '../../shell/one-exec.js';
import { backupMismatch, runOk, sha256, tail, type Plan, type PlanEnv, type StepContext, type StepType } from '../step.js';

const oneLine = (what: string) =>
  z
    .string()
    .min(1, `${what} must not be empty`)
    .refine((s) => !/[\r\n]/.test(s), `${what} must be a single line (a crontab entry is one line)`);

export const cronSchema = z
  .object({
    name: oneLine('name').refine((s) => s === s.trim(), 'name must not start or end with spaces'),
    schedule: z
      .string()
      .superRefine((s, ctx) => {
        const why = cronProblem(s);
        if (why) ctx.addIssue({ code: z.ZodIssueCode.custom, message: why });
      })
      .optional(),
    command: oneLine('command')
      // cron ends the command at an unescaped % and feeds the rest as stdin: `date +%F` would run `date +`.
      .refine((s) => !/(^|[^\\])%/.test(s), 'an unescaped % ends a crontab command (cron turns it into a newline); write \\% for a literal %')
      .optional(),
    user: z
      .string()
      .regex(/^[a-z_][a-z0-9_.-]*\$?$/i, 'not a valid user name')
      .default('root'),
    state: z.enum(['present', 'absent']).default('present'),
  })
  .strict()
  .superRefine((p, ctx) => {
    if (p.state !== 'present') return;
    for (const k of ['schedule', 'command'] as const) {
      if (p[k] === undefined) ctx.addIssue({ code: z.ZodIssueCode.custom, message: `${k} is required with state: present`, path: [k] });
    }
  });

export type CronParams = z.output<typeof cronSchema>;

export interface CronState {
  user: string;
  /** The user's crontab as `crontab -l` prints it; null when the user has none. */
  text: string | null;
  /** The user does not exist (yet): an earlier step may create it; apply fails if it is still missing. */
  userMissing?: boolean;
  /** The host's clock (ms since epoch) and time zone, for the next run times in the plan. */
  clock?: { now: number; tz: string };
}

/**
 * Where the crontab as it was is kept, or null: the user had none (rollback removes it). The
 * text itself lives in a root-only backup on the host, not in the journal: a crontab may hold
 * secrets, and a masked copy could not be reinstalled by a later undo.
 */
export interface CronUndo {
  user: string;
  previous: { backup: string; sha256: string } | null;
}

export const marker = (name: string) => `# hostsmith: ${name}`;
const isMarker = (l: string) => /^# hostsmith: /.test(l);

/**
 * The crontab with `p` applied, or null when nothing would be left (the crontab is removed).
 * The entry is the line right after its marker; every other line stays as it is.
 */
export function editCrontab(text: string | null, p: CronParams): string | null {
  const lines = text === null || text === '' ? [] : text.replace(/\n$/, '').split('\n');
  const mark = marker(p.name);
  const out: string[] = [];
  let placed = false;
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!;
    if (l.trimEnd() !== mark) {
      out.push(l);
      continue;
    }
    const next = lines[i + 1];
    if (next !== undefined && !isMarker(next)) i++;
    // A second block with the same name is dropped: one entry per name.
    if (p.state === 'present' && !placed) {
      out.push(l, entryLine(p));
      placed = true;
    }
  }
  if (p.state === 'present' && !placed) out.push(mark, entryLine(p));
  if (out.length === lines.length && out.every((l, i) => l === lines[i])) return text;
  return out.length ? `${out.join('\n')}\n` : null;
}

export const entryLine = (p: CronParams) => `${p.schedule!.trim()} ${p.command}`;

function pad(n: number): string {
  return String(n).padStart(2, '0');
}

/** "At 03:00 AM; next 2026-11-23 03:00, 2026-11-24 03:00, 2026-11-25 03:00" in the host's zone. */
export function describeSchedule(schedule: string, now?: number, tz?: string): string {
  const s = schedule.trim();
  let words: string;
  try {
    words = cronstrue.toString(s);
  } catch {
    words = s;
  }
  if (now === undefined) return words;
  const zone = tz || 'UTC';
  let next: string[];
  try {
    const it = CronExpressionParser.parse(s, { currentDate: new Date(now), tz: zone });
    next = it.take(3).map((d) => `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`);
  } catch {
    return zone === 'UTC' ? words : describeSchedule(s, now, 'UTC');
  }
  return `${words}; next ${next.join(', ')}${zone === 'UTC' || zone === 'Etc/UTC' ? ' UTC' : ` ${zone}`}`;
}

export function planCron(p: CronParams, s: CronState, env: PlanEnv): Plan<CronUndo> {
  const next = editCrontab(s.text, p);
  const whose = `${p.user}'s crontab`;
  if (next === s.text) {
    return { changed: false, summary: p.state === 'present' ? `"${p.name}" is in ${whose} as wanted` : `"${p.name}" is not in ${whose}`, undo: null };
  }
  const diff = unifiedDiff(`crontab(${p.user})`, s.text, next);
  const undo: CronUndo = { user: p.user, previous: s.text === null ? null : { backup: backupPath(env, `/crontabs/${p.user}`), sha256: sha256(s.text) } };
  if (p.state === 'absent') {
    return { changed: true, action: 'remove', summary: `remove "${p.name}" from ${whose}${next === null ? ' (and the crontab, left empty)' : ''}`, diff, undo };
  }
  const had = (s.text ?? '').split('\n').some((l) => l.trimEnd() === marker(p.name));
  const verb = had ? `update "${p.name}" in` : `add "${p.name}" to`;
  return {
    changed: true,
    action: had ? 'change' : 'create',
    summary: `${verb} ${whose}: ${p.schedule!.trim()} (${s.clock ? describeSchedule(p.schedule!, s.clock.now, s.clock.tz) : describeSchedule(p.schedule!)})${s.userMissing ? ` — user ${p.user} does not exist yet: an earlier step must create it` : ''}`,
    diff,
    undo,
  };
}

function hostSaid(stderr: string, code: number): string {
  const said = tail(stderr, 5) || `exit ${code}`;
  return /must be privileged/.test(stderr) ? `${said} (another user's crontab needs root: set sudo: true on the recipe or step, or pass --sudo)` : said;
}

// ignoreBOM keeps a byte-order mark in the text: host content is shown and written back byte for byte.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** One round trip: the host's clock and zone on the first line, then the crontab. */
export function checkScript(user: string): string {
  // The zone's name by the shell's own `read` where Debian keeps it: a `cat` in a `$(…)` was two
  // processes on every read of every crontab.
  return [
    `tz=; IFS= read -r tz 2>/dev/null </etc/timezone || [ -n "$tz" ] || tz=$(readlink /etc/localtime 2>/dev/null | sed 's|^.*/zoneinfo/||')`,
    `printf '%s %s\\n' "$(date +%s)" "$tz"`,
    `exec crontab -l -u ${quote(user)}`,
  ].join('\n');
}

/**
 * What the guard reads (guard.ts): the crontab and crontab's exit code, without the clock line
 * (the clock moves; the crontab is the state).
 */
function guardCheck(user: string): string {
  return `crontab -l -u ${quote(user)} 2>/dev/null; echo "rc=$?"`;
}

export function parseCheck(user: string, r: { code: number; stdoutRaw: Buffer; stderr: string }): CronState {
  const s = parseCrontab(user, r);
  const nl = r.stdoutRaw.indexOf(0x0a);
  // What guardCheck prints for this state, kept with it for apply.
  return remember(s, Buffer.concat([r.stdoutRaw.subarray(nl + 1), Buffer.from(`rc=${r.code}\n`)]));
}

function parseCrontab(user: string, r: { code: number; stdoutRaw: Buffer; stderr: string }): CronState {
  const nl = r.stdoutRaw.indexOf(0x0a);
  const [secs, tz] = r.stdoutRaw
    .subarray(0, nl < 0 ? r.stdoutRaw.length : nl)
    .toString('utf8')
    .trim()
    .split(' ');
  if (nl < 0 || !/^\d+$/.test(secs ?? '')) throw new StepError(`cannot read ${user}'s crontab: ${hostSaid(r.stderr, r.code)}`, { code: r.code, stderr: r.stderr });
  const clock = { now: Number(secs) * 1000, tz: tz || 'UTC' };
  const withClock = (st: CronState): CronState => ({ ...st, clock });
  if (r.code === 1 && /no crontab for/.test(r.stderr)) return withClock({ user, text: null });
  if (r.code !== 0 && /user .* unknown|unknown user/i.test(r.stderr)) return withClock({ user, text: null, userMissing: true });
  if (r.code !== 0) throw new StepError(`cannot read ${user}'s crontab: ${hostSaid(r.stderr, r.code)}`, { code: r.code, stderr: r.stderr });
  let text: string;
  try {
    text = utf8.decode(r.stdoutRaw.subarray(nl + 1));
  } catch {
    throw new StepError(`${user}'s crontab is not UTF-8 text; hostsmith only edits UTF-8 crontabs`);
  }
  return withClock({ user, text });
}

async function readCrontab(ctx: StepContext, user: string): Promise<CronState> {
  return parseCheck(user, await ctx.exec(checkScript(user)));
}

/** Removes the user's crontab; already gone is fine. */
function removeCrontabScript(user: string): string {
  return `err=$(crontab -r -u ${quote(user)} 2>&1 >/dev/null) || case "$err" in *'no crontab for'*) ;; *) printf '%s\\n' "$err" >&2; exit 1 ;; esac`;
}

export const cronStep: StepType<CronParams, CronState, CronUndo> = {
  type: 'cron',
  schema: cronSchema,
  check: (ctx, p) => readCrontab(ctx, p.user),
  plan: planCron,
  guarded: true,
  /** One exec: held to the crontab the check read, that crontab kept in a root-only file, the new one installed and read back. */
  async apply(ctx, p, plan, now) {
    if (now.userMissing) throw new StepError(`user ${p.user} does not exist on ${ctx.host}: create it first (a user step before this one)`);
    const prev = plan.undo?.previous ?? null;
    const text = editCrontab(now.text, p);
    const raw = answerOf(now);
    const u = quote(p.user);
    const { r, failed } = await runOneExec(
      ctx,
      {
        ...(raw ? { guard: guardScript(guardCheck(p.user), raw) } : {}),
        stages: [
          // The guard held the crontab to what the check read: it is what the backup keeps.
          ...(prev && now.text !== null ? [{ name: 'backup', script: `${backupDirsScript(ctx, prev.backup)} && crontab -l -u ${u} > ${quote(prev.backup)}` }] : []),
          { name: 'change', script: text === null ? removeCrontabScript(p.user) : `crontab -u ${u} -` },
        ],
        read: checkScript(p.user),
      },
      `${p.user}'s crontab changed after it was read`,
      text === null ? {} : { stdin: text },
    );
    if (!failed) return { state: parseCheck(p.user, r) };
    if (failed.stage === 'read') return {}; // installed; the engine reads it on its own
    const what = failed.stage === 'backup' ? `backing up the crontab to ${prev?.backup}` : text === null ? `removing ${p.user}'s crontab` : `installing ${p.user}'s crontab`;
    throw new StepError(`${what} failed: ${hostSaid(failed.said, failed.code)}`, { code: failed.code, stderr: r.stderr });
  },
  hostRollback(_p, undo) {
    const u = quote(undo.user);
    if (!undo.previous) return removeCrontabScript(undo.user);
    const b = quote(undo.previous.backup);
    return [
      `[ -f ${b} ] || { echo ${quote(`the backup of ${undo.user}'s crontab (${undo.previous.backup}) is gone; reinstall it by hand`)} >&2; exit 1; }`,
      `[ "$(sha256sum < ${b} | cut -c1-64)" = ${undo.previous.sha256} ] || { echo ${quote(`the backup of ${undo.user}'s crontab (${undo.previous.backup}) does not match what was saved; not installing it`)} >&2; exit 1; }`,
      `crontab -u ${u} - < ${b}`,
    ].join('\n');
  },
  // The one rollback: the controller, undo, recover and the lockout watchdog all run the host script.
  rollback: async (ctx, p, undo) => {
    await runOk(ctx, cronStep.hostRollback!(p, undo, undefined as never), `restoring ${undo.user}'s crontab on ${ctx.host}`);
  },

  // The crontab and whether the user exists; the host's clock (for next run times) is not state.
  stateKey: (_p, s) => ({ user: s.user, text: s.text, userMissing: s.userMissing ?? false }),
  undoSummary: (u) => {
    if (!('previous' in u)) return compact(u);
    const who = str(u, 'user') ?? 'the user';
    const prev = u.previous as { backup?: unknown } | null;
    return prev ? `put back ${who}'s crontab from the backup ${String(prev.backup)}` : `remove ${who}'s crontab (there was none)`;
  },
  undoMismatch: (p, u) => {
    if (u.user !== p.user) return `its undo data is for ${JSON.stringify(u.user)}'s crontab, not ${p.user}'s`;
    const prev = u.previous as { backup?: unknown } | null | undefined;
    return prev ? backupMismatch(prev.backup) : undefined;
  },
  staticCheck: async (raw) => {
    if (typeof raw.schedule !== 'string' || raw.schedule.includes('{{')) return [];
    const why = cronProblem(raw.schedule);
    return why ? [{ path: ['schedule'], message: why }] : [];
  },
  // crontab(1) writes the user's file under the spool.
  footprint: (p) => ({ reads: [`user:${p.user}`, `cron:${p.user}`], writes: [`cron:${p.user}`, 'path:/var/spool/cron'] }),
  gone: async (ctx, p) => ((await ctx.exec(`getent passwd ${quote(p.user)} >/dev/null`)).code === 0 ? null : `user ${p.user} no longer exists`),
};
