/**
 * `timezone`: /etc/localtime a symlink to /usr/share/zoneinfo/<name> and /etc/timezone holding
 * the name, as Debian's tzdata sets them (and timedatectl on a systemd host). Both go through
 * file-state.ts: guarded writes, root-only backups, nothing written through a planted link, and
 * rollback puts back exactly what was there (a link and its target, or a file from its backup).
 */
import { posix } from 'node:path';
import { z } from 'zod';
import { StepError } from '../../errors.js';
import { quote } from '../../shell/script.js';
import { backupPath } from '../backup.js';
import {
  applyPath,
  checkPath,
  checkScript as pathCheckScript,
  pathKey,
  pathUndoSummary,
  pathWrote,
  planPath,
  rollbackPath,
  rollbackPathScript,
  type FileUndo,
  type PathState,
  type Wanted,
} from '../file-state.js';
import { applyParts, partsUndoMismatch, readAnswer, rollbackParts, rollbackPartsScript, splitAnswer, textOf, type Part } from '../path-parts.js';
import { runOk, type Plan, type PlanEnv, type StepContext, type StepType } from '../step.js';
import { str, type UndoData } from '../undo-text.js';

export const LOCALTIME = '/etc/localtime';
export const TIMEZONE_FILE = '/etc/timezone';
export const ZONEINFO = '/usr/share/zoneinfo';

/** Parts of letters, digits, "_", "+" and "-", joined by "/": no ".", "..", empty part or leading "/". */
const ZONE_NAME = /^[A-Za-z0-9_+-]+(\/[A-Za-z0-9_+-]+)*$/;

export const timezoneSchema = z
  .object({
    name: z
      .string()
      .regex(ZONE_NAME, 'a time zone name is parts of letters, digits, "_", "+" and "-" joined by "/", with no "." or empty part (such as Europe/Berlin or Etc/UTC)')
      .refine((n) => !n.startsWith('-'), 'a time zone name does not start with "-"'),
  })
  .strict();

export type TimezoneParams = z.output<typeof timezoneSchema>;

export interface TimezoneState {
  localtime: PathState;
  timezone: PathState;
}

export interface TimezoneUndo {
  /** The zone the step set (checked against the step's params by undoMismatch). */
  name: string;
  localtime: FileUndo | null;
  timezone: FileUndo | null;
}

export const zoneFile = (name: string): string => `${ZONEINFO}/${name}`;

/**
 * One round trip for the zone's file and /etc/localtime, one more for /etc/timezone. A zone that
 * is not a regular file under /usr/share/zoneinfo (following links, as the zone files of tzdata's
 * old names are) is an error: a link to it would leave the host on UTC without a word.
 */
/**
 * systemd-timedated reads the zone once when it starts and answers timedatectl from memory until
 * it exits, idle, a little later: after the link moves under it, a running one is stopped, so
 * timedatectl never shows the zone a change or a rollback just replaced. Stopped, not restarted:
 * D-Bus starts it again when it is next asked, and a restart on every change would run into
 * systemd's limit on how often a unit may start.
 */
export const FORGET_TIMEDATED =
  'if [ -d /run/systemd/system ] && systemctl -q is-active systemd-timedated.service 2>/dev/null; then systemctl stop systemd-timedated.service >/dev/null 2>&1 || true; fi';

export async function checkTimezone(ctx: StepContext, p: TimezoneParams): Promise<TimezoneState> {
  const zone = [
    `z=${quote(zoneFile(p.name))}`,
    `if [ -f "$z" ]; then printf 'zone\\0'; elif [ -e "$z" ]; then printf 'notafile\\0'; elif [ -d ${ZONEINFO} ]; then printf 'missing\\0'; else printf 'notzdata\\0'; fi`,
  ].join('\n');
  const raw = await readAnswer(ctx, `${zone}\n${pathCheckScript(LOCALTIME)}`, `the time zone ${p.name}`);
  const { fields, state } = splitAnswer(raw, 1, LOCALTIME, `the time zone ${p.name}`);
  zoneThere(p.name, fields[0]!);
  return { localtime: state, timezone: await checkPath(ctx, TIMEZONE_FILE) };
}

/** Throws the step's error for a zone the host does not have. */
export function zoneThere(name: string, how: string): void {
  const file = zoneFile(name);
  if (how === 'zone') return;
  if (how === 'notzdata') throw new StepError(`no time zone data on this host (${ZONEINFO} does not exist): install tzdata first (a package step with install: [tzdata])`);
  if (how === 'notafile') throw new StepError(`${file} is not a time zone file (a folder?): give a zone such as Europe/Berlin; the zones are the files under ${ZONEINFO} (package tzdata)`);
  throw new StepError(`no time zone ${name} on this host (${file} does not exist): check the name (timedatectl list-timezones lists them), or install tzdata`);
}

/** Does a link's target name the zone file, written either absolute or relative to /etc (as timedatectl writes it)? */
const linksTo = (target: string | undefined, name: string) => target !== undefined && posix.resolve(posix.dirname(LOCALTIME), target) === zoneFile(name);

/** The zone a link names, for the summary: its target under /usr/share/zoneinfo, else the target itself. */
function zoneOfLink(target: string): string {
  const abs = posix.resolve(posix.dirname(LOCALTIME), target);
  return abs.startsWith(`${ZONEINFO}/`) ? abs.slice(ZONEINFO.length + 1) : target;
}

interface FilePart {
  wanted: Wanted;
  plan: Plan<FileUndo>;
  what: string;
}

function localtimePart(p: TimezoneParams, s: PathState, env: PlanEnv): FilePart | null {
  const target = zoneFile(p.name);
  const wanted: Wanted = { path: LOCALTIME, state: 'link', target };
  if (s.kind === 'link') {
    if (linksTo(s.target, p.name)) return null;
    return { wanted, plan: planPath(wanted, s, env), what: `${LOCALTIME}: ${zoneOfLink(s.target ?? '')} → ${p.name}` };
  }
  if (s.kind === 'absent') return { wanted, plan: planPath(wanted, s, env), what: `link ${LOCALTIME} → ${target}` };
  if (s.kind !== 'file') throw new StepError(`${LOCALTIME} is a ${s.kind}, not a link or a zone file; remove it first (a file step with state: absent)`);
  // A copy of a zone file (as some images ship): replaced by the link, kept in a backup for rollback.
  return {
    wanted,
    plan: {
      changed: true,
      summary: `replace the file ${LOCALTIME} with a link to ${target}`,
      undo: { kind: 'file', path: LOCALTIME, mode: s.mode, owner: s.owner, group: s.group, backup: backupPath(env, LOCALTIME) },
    },
    what: `${LOCALTIME}: a copied zone file → a link to ${target}`,
  };
}

function timezoneFilePart(p: TimezoneParams, s: PathState, env: PlanEnv): FilePart | null {
  const old = textOf(TIMEZONE_FILE, s);
  if (old !== null && old.trim() === p.name) return null;
  const wanted: Wanted = { path: TIMEZONE_FILE, state: 'present', content: Buffer.from(`${p.name}\n`, 'utf8') };
  return { wanted, plan: planPath(wanted, s, env), what: old === null ? `create ${TIMEZONE_FILE}` : `${TIMEZONE_FILE}: ${JSON.stringify(old.trim())} → ${JSON.stringify(p.name)}` };
}

export function planTimezone(p: TimezoneParams, s: TimezoneState, env: PlanEnv): Plan<TimezoneUndo> {
  const link = localtimePart(p, s.localtime, env);
  const file = timezoneFilePart(p, s.timezone, env);
  if (!link && !file) return { changed: false, summary: `time zone is ${p.name} (${LOCALTIME} links to ${zoneFile(p.name)}, ${TIMEZONE_FILE} says so)`, undo: null };
  const was = s.localtime.kind === 'link' ? ` (was ${zoneOfLink(s.localtime.target ?? '')})` : '';
  const diff = [link?.plan.diff, file?.plan.diff].filter(Boolean).join('');
  return {
    changed: true,
    summary: `set time zone ${p.name}${was}: ${[link?.what, file?.what].filter(Boolean).join('; ')}`,
    ...(diff ? { diff } : {}),
    undo: { name: p.name, localtime: link?.plan.undo ?? null, timezone: file?.plan.undo ?? null },
  };
}

function undoSummary(u: UndoData): string {
  const parts = [u.timezone, u.localtime].filter((x) => x && typeof x === 'object').map((x) => pathUndoSummary(x as UndoData));
  return parts.length ? parts.join('; ') : `nothing to put back for time zone ${str(u, 'name') ?? '?'}`;
}

function undoMismatch(p: TimezoneParams, u: UndoData): string | undefined {
  if (u.name !== p.name) return `its undo data is for time zone ${JSON.stringify(u.name)}, not ${p.name}`;
  return partsUndoMismatch(u, [
    ['localtime', LOCALTIME],
    ['timezone', TIMEZONE_FILE],
  ]);
}

export const timezoneStep: StepType<TimezoneParams, TimezoneState, TimezoneUndo> = {
  type: 'timezone',
  schema: timezoneSchema,
  check: checkTimezone,
  guarded: true,
  plan: planTimezone,
  async apply(ctx, p, plan, s) {
    const undo = plan.undo!;
    const env = { runId: ctx.runId, step: ctx.step, backupDir: ctx.backupDir };
    // The same parts as planned (the engine held the state to the plan's), with the plan's own
    // undo data: its backup paths are the ones journaled.
    const state: TimezoneState = { ...s };
    const part = (made: FilePart | null, u: FileUndo, was: PathState, keep: (now: PathState) => void): Part => {
      if (!made) throw new StepError(`${u.path} no longer needs the change that was planned; make a new plan`);
      const planned = { changed: true, summary: plan.summary, undo: u };
      return {
        apply: async () => keep((await applyPath(ctx, made.wanted, planned, was)) ?? was),
        rollback: () => rollbackPath(ctx, u),
      };
    };
    const parts: Part[] = [];
    if (undo.localtime)
      parts.push(
        part(localtimePart(p, s.localtime, env), undo.localtime, s.localtime, (now) => {
          state.localtime = now;
        }),
      );
    if (undo.timezone)
      parts.push(
        part(timezoneFilePart(p, s.timezone, env), undo.timezone, s.timezone, (now) => {
          state.timezone = now;
        }),
      );
    await applyParts(parts);
    await runOk(ctx, FORGET_TIMEDATED, 'letting systemd-timedated read the time zone again');
    return { state };
  },
  // Newest first, each tried even if another fails.
  rollback: (ctx, _p, undo) =>
    rollbackParts([
      ...(undo.timezone ? [() => rollbackPath(ctx, undo.timezone!)] : []),
      ...(undo.localtime ? [() => rollbackPath(ctx, undo.localtime!)] : []),
      () => runOk(ctx, FORGET_TIMEDATED, 'letting systemd-timedated read the time zone again').then(() => undefined),
    ]),
  hostRollback: (_p, undo) => rollbackPartsScript([...(undo.timezone ? [rollbackPathScript(undo.timezone)] : []), ...(undo.localtime ? [rollbackPathScript(undo.localtime)] : []), FORGET_TIMEDATED]),
  stateKey: (_p, s) => ({ localtime: pathKey(s.localtime), timezone: pathKey(s.timezone) }),
  footprint: (p) => {
    const writes = [`path:${LOCALTIME}`, `path:${TIMEZONE_FILE}`];
    // The zone's file is read (it must exist): a package step installing tzdata comes first.
    return { reads: [...writes, `path:${zoneFile(p.name)}`], writes };
  },
  wrote: (_p, undo) => [...pathWrote(undo?.localtime ?? null), ...pathWrote(undo?.timezone ?? null)],
  undoSummary,
  undoMismatch,
};
