/**
 * `systemd_unit`: a unit file of our own in /etc/systemd/system (a service, timer, socket, path, …),
 * from `content` or a Handlebars template in `src`, with systemd told about it (`daemon-reload` when the
 * file changed) and, when asked, its boot state (`enabled`) and running state (`state`).
 *
 * The file goes through file-state.ts (guarded write, root-only backup, nothing written through a
 * planted link: any link at the unit path is refused, a mask to /dev/null included). The rest is
 * systemctl. Rollback is one script, run by the controller, `undo`, `recover` and the lockout
 * watchdog alike, and its order matters: stop what the step started and take away the links it
 * made while the step's own file is still there (disable reads it), then put the file back and
 * daemon-reload, then enable and start again on the restored definition what was so before.
 *
 * `restarted` and `reloaded` act when the step changes the unit file (so the running unit takes
 * the new definition) or the unit is stopped: a rerun with nothing changed is a no-op. A restart
 * on every run is a `service` step's job (or a handler's).
 */
import { z } from 'zod';
import { StepError } from '../../errors.js';
import { quote } from '../../shell/script.js';
import { enterScript, withSafePath } from '../../shell/safe-path.js';
import { flag } from '../accounts.js';
import {
  renderSource,
  applyPath,
  checkScript as pathCheckScript,
  pathKey,
  pathUndoMismatch,
  pathUndoSummary,
  pathWrote,
  planPath,
  rollbackPathScript,
  sourceProblems,
  type FileUndo,
  type PathState,
  type Wanted,
} from '../file-state.js';
import { readAnswer, splitAnswer } from '../path-parts.js';
import { SERVICE_WRITES } from '../service/service.js';
import { runOk, type Plan, type PlanEnv, type StaticEnv, type StaticProblem, type StepContext, type StepType } from '../step.js';
import { str, type UndoData } from '../undo-text.js';

export const UNIT_DIR = '/etc/systemd/system';

/** The unit types that have unit files of their own (not device or scope units), and the section each must have. */
const UNIT_TYPES: Record<string, string | null> = {
  service: 'Service',
  socket: 'Socket',
  timer: 'Timer',
  path: 'Path',
  mount: 'Mount',
  automount: 'Automount',
  swap: 'Swap',
  target: null,
  slice: null,
};

/**
 * A unit name as systemd takes it (prefix, an optional @instance, a type suffix), with nothing a
 * shell or a path could read otherwise: no "/", no leading "-" or ".", no blanks.
 */
const UNIT_NAME = new RegExp(`^[A-Za-z0-9_:\\\\][A-Za-z0-9_.:\\\\-]*(@[A-Za-z0-9_.:\\\\-]*)?\\.(${Object.keys(UNIT_TYPES).join('|')})$`);

const unitName = z
  .string()
  .max(255, 'a unit name is at most 255 characters')
  .regex(UNIT_NAME, `a unit file name such as app.service or backup.timer: letters, digits, _ . : - \\ and one @, ending in .${Object.keys(UNIT_TYPES).join(', .')}`);

export const systemdUnitSchema = z
  .object({
    name: unitName,
    content: z.string().optional(),
    /** A Handlebars file, found as a template step's src is (templates/ beside the recipe). */
    src: z.string().min(1).optional(),
    /** Names the template may use beyond the recipe's, as a template step's vars. */
    vars: z.record(z.unknown()).optional(),
    enabled: flag.optional(),
    state: z.enum(['started', 'stopped', 'restarted', 'reloaded']).optional(),
  })
  .strict()
  .superRefine((p, ctx) => {
    const issue = (path: string, message: string) => ctx.addIssue({ code: z.ZodIssueCode.custom, path: [path], message });
    if ((p.content === undefined) === (p.src === undefined)) issue('content', 'give the unit as content or as a template in src (one of them)');
    if (p.vars !== undefined && p.src === undefined) issue('vars', 'vars are for a template in src');
    // foo@.service is a template of units, not a unit: only its instances (foo@bar.service) run.
    if (/@\.[a-z]+$/.test(p.name)) {
      if (p.state !== undefined) issue('state', `${p.name} is a template unit: start an instance of it (a service step with name: ${p.name.replace('@.', '@NAME.')})`);
      if (p.enabled !== undefined) issue('enabled', `${p.name} is a template unit: enable an instance of it (a service step with name: ${p.name.replace('@.', '@NAME.')})`);
    }
  });

export type SystemdUnitParams = z.output<typeof systemdUnitSchema> & {
  /** The template rendered at prepare; the journal keeps its digest only. */
  rendered?: string;
};

export interface SystemdUnitState {
  /** /run/systemd/system exists: systemd is the running init. */
  systemd: boolean;
  /** LoadState: loaded, not-found, bad-setting, masked, … */
  load: string;
  /** What `systemctl is-active` says (active, inactive, failed, activating, …). */
  active: string;
  /** What `systemctl is-enabled` says; not-found when it says nothing. */
  enabled: string;
  /** systemd's loaded definition is older than the files on disk (NeedDaemonReload). */
  stale: boolean;
  /** The .wants/.requires/.upholds folders the wanted [Install] section enables into that do not exist yet. */
  missingDirs: string[];
  file: PathState;
}

export type Again = 'restart' | 'reload';

export interface SystemdUnitUndo {
  name: string;
  /** The unit file as it was (null: the step did not change it). */
  file: FileUndo | null;
  /** What is-enabled said before the step enabled or disabled the unit (absent: it did not). */
  enabled?: string;
  /** Whether it was active before the step started, stopped, restarted or reloaded it (absent: it did none). */
  active?: boolean;
  /** The step restarted (or reloaded) it on the new file: rollback does so again on the restored one. */
  again?: Again;
  /** Folders `systemctl enable` made for its links: removed by rollback when empty. */
  dirs?: string[];
}

export const unitPath = (name: string): string => `${UNIT_DIR}/${name}`;

const typeOf = (name: string): string => name.slice(name.lastIndexOf('.') + 1);

/** The unit file's bytes as wanted. */
export function contentOf(p: SystemdUnitParams): string {
  if (p.content !== undefined) return p.content;
  if (p.rendered === undefined) throw new StepError(`the template ${p.src} of ${p.name} was not rendered (prepare did not run)`);
  return p.rendered;
}

/** The unit file's lines as systemd reads them: sections, and key=value (continuation lines joined). */
export function parseUnit(text: string): { sections: Map<string, Array<[string, string]>>; problems: string[] } {
  const sections = new Map<string, Array<[string, string]>>();
  const problems: string[] = [];
  let current: Array<[string, string]> | undefined;
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i]!.replace(/\r$/, '');
    const t = line.trim();
    if (!t || t.startsWith('#') || t.startsWith(';')) continue;
    while (line.endsWith('\\') && i + 1 < lines.length) line = `${line.slice(0, -1)} ${lines[++i]!.replace(/\r$/, '')}`;
    const head = /^\s*\[([^\]]+)\]\s*$/.exec(line);
    if (head) {
      current = sections.get(head[1]!) ?? [];
      sections.set(head[1]!, current);
      continue;
    }
    const eq = line.indexOf('=');
    if (eq <= 0 || !/^[A-Za-z0-9_.-]+$/.test(line.slice(0, eq).trim())) {
      problems.push(`line ${i + 1} is neither a [Section] header nor Key=value: ${JSON.stringify(t.slice(0, 80))}`);
      continue;
    }
    if (!current) {
      problems.push(`line ${i + 1} comes before any [Section] header: ${JSON.stringify(t.slice(0, 80))}`);
      continue;
    }
    current.push([line.slice(0, eq).trim(), line.slice(eq + 1).trim()]);
  }
  return { sections, problems };
}

/** The [Install] keys that make `systemctl enable` do something. */
const INSTALL_KEYS = ['WantedBy', 'RequiredBy', 'UpheldBy', 'Alias', 'Also'];

/** The [Install] section as enable reads it, normalised (null: none that enable would act on). */
export function installOf(text: string | null): string | null {
  if (text === null) return null;
  const entries = (parseUnit(text).sections.get('Install') ?? []).filter(([k]) => INSTALL_KEYS.includes(k));
  return entries.length ? entries.map(([k, v]) => `${k}=${v.split(/\s+/).join(' ')}`).join('\n') : null;
}

/** The folders enable puts links in for this content's WantedBy=/RequiredBy=/UpheldBy=, as /etc/systemd/system/<unit>.wants etc. */
export function linkDirs(text: string): string[] {
  const out: string[] = [];
  const suffix: Record<string, string> = { WantedBy: 'wants', RequiredBy: 'requires', UpheldBy: 'upholds' };
  for (const [k, v] of parseUnit(text).sections.get('Install') ?? []) {
    if (!suffix[k]) continue;
    for (const unit of v.split(/\s+/).filter(Boolean)) {
      if (!UNIT_NAME.test(unit)) continue;
      const dir = `${UNIT_DIR}/${unit}.${suffix[k]}`;
      if (!out.includes(dir)) out.push(dir);
    }
  }
  return out;
}

/** Why the content is not a unit file systemd would load, or undefined (a cheap check: systemd itself checks after daemon-reload). */
export function contentProblem(name: string, text: string): string | undefined {
  const { sections, problems } = parseUnit(text);
  if (problems.length) return `${name} is not a unit file: ${problems.slice(0, 3).join('; ')}`;
  const own = UNIT_TYPES[typeOf(name)];
  if (own && !sections.has(own)) return `${name} has no [${own}] section (a .${typeOf(name)} unit needs one)`;
  return undefined;
}

const PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; export PATH';

/**
 * One round trip: whether systemd runs, then LoadState, is-active, is-enabled and NeedDaemonReload
 * (each NUL-terminated; empty where systemd does not run), one field per link folder (1 = exists),
 * then what file-state's check prints for the unit file.
 */
export function checkScript(name: string, dirs: string[]): string {
  const n = quote(name);
  return [
    PATH,
    'if [ -d /run/systemd/system ]; then',
    "  printf 'systemd\\0'",
    `  printf '%s\\0' "$(systemctl show -p LoadState --value -- ${n} 2>/dev/null)" "$(systemctl is-active -- ${n} 2>/dev/null)" "$(systemctl is-enabled -- ${n} 2>/dev/null)" "$(systemctl show -p NeedDaemonReload --value -- ${n} 2>/dev/null)"`,
    "else printf 'other\\0\\0\\0\\0\\0'; fi",
    ...dirs.map((d) => `if [ -d ${quote(d)} ]; then printf '1\\0'; else printf '0\\0'; fi`),
    pathCheckScript(unitPath(name)),
  ].join('\n');
}

export function parseUnitCheck(raw: Buffer, p: SystemdUnitParams, dirs: string[]): SystemdUnitState {
  const path = unitPath(p.name);
  const { fields, state: file } = splitAnswer(raw, 5 + dirs.length, path, `unit ${p.name}`);
  const [init, load, active, enabled, stale] = fields as [string, string, string, string, string];
  return {
    systemd: init === 'systemd',
    load: load || 'not-found',
    active: active || 'inactive',
    enabled: enabled || 'not-found',
    stale: stale === 'yes',
    missingDirs: dirs.filter((_, i) => fields[5 + i] !== '1'),
    file,
  };
}

export async function checkUnit(ctx: StepContext, p: SystemdUnitParams): Promise<SystemdUnitState> {
  const dirs = p.enabled === undefined ? [] : linkDirs(contentOf(p));
  const s = parseUnitCheck(await readAnswer(ctx, checkScript(p.name, dirs), `unit ${p.name}`), p, dirs);
  if (!s.systemd) throw new StepError(`systemd does not run on ${ctx.host} (no /run/systemd/system): a systemd_unit step needs systemd as the init; for sysvinit, an init script and a service step`);
  return s;
}

/** active, reloading and activating all count as running, as the service step counts them. */
export const isRunning = (active: string): boolean => ['active', 'reloading', 'activating'].includes(active);

type RunAction = 'start' | 'stop' | 'restart' | 'reload';
type EnableAction = 'enable' | 'disable' | 'reenable';

export interface UnitActions {
  file: Plan<FileUndo> | null;
  /** daemon-reload with the file as it is (systemd loaded an older one). */
  reloadOnly: boolean;
  enable?: EnableAction;
  run?: RunAction;
}

/** The boot states hostsmith moves a unit from: others (masked, linked, indirect, generated, …) are refused. */
const MOVABLE = ['enabled', 'disabled', 'not-found', 'static', 'enabled-runtime'];

/** What must be done to reach `p` from `s`; shared by plan and apply (from the same state). */
export function unitActions(p: SystemdUnitParams, s: SystemdUnitState, env: PlanEnv): UnitActions {
  const path = unitPath(p.name);
  const text = contentOf(p);
  const problem = contentProblem(p.name, text);
  if (problem) throw new StepError(problem);
  if (s.file.kind === 'link') {
    if (s.file.target === '/dev/null') throw new StepError(`${p.name} is masked (${path} is a link to /dev/null): unmask it first (systemctl unmask ${p.name})`);
    throw new StepError(
      `${path} is a symbolic link (to ${s.file.target}), not a unit file; hostsmith does not write a unit through a link (it may have been planted, or made by systemctl link): remove it first (systemctl disable ${p.name}, or a file step with state: absent)`,
    );
  }
  if (s.file.kind !== 'absent' && s.file.kind !== 'file') throw new StepError(`${path} is a ${s.file.kind}, not a regular file; remove it first`);
  const wanted: Wanted = { path, state: 'present', content: Buffer.from(text, 'utf8'), mode: 0o644, owner: 'root', group: 'root' };
  const fp = planPath(wanted, s.file, env);
  const file = fp.changed ? fp : null;
  const contentChanges = file !== null && (s.file.kind === 'absent' || !(s.file.content ?? Buffer.alloc(0)).equals(wanted.content!));
  const out: UnitActions = { file, reloadOnly: !file && s.stale && s.load !== 'not-found' };

  if (p.enabled !== undefined) {
    const install = installOf(text);
    if (install === null) {
      throw new StepError(
        `${p.name} has no [Install] section with WantedBy=, RequiredBy=, Alias= or Also=: systemd cannot enable or disable it; add one, or leave out enabled (such a unit starts when another wants it, as a service does when its timer fires)`,
      );
    }
    if (!MOVABLE.includes(s.enabled)) {
      throw new StepError(
        `systemctl is-enabled says ${p.name} is ${s.enabled}: hostsmith enables or disables units that are enabled, disabled or not there yet; ${s.enabled.startsWith('masked') ? `unmask it first (systemctl unmask ${p.name})` : 'look at it with systemctl status, and make it plainly enabled or disabled first'}`,
      );
    }
    const on = s.enabled === 'enabled';
    if (p.enabled && !on) out.enable = 'enable';
    // The links follow the [Install] section: a new one means new links (reenable drops the old ones).
    else if (p.enabled && on && contentChanges && (s.file.kind === 'absent' || installOf(textOfFile(s.file)) !== install)) out.enable = 'reenable';
    else if (!p.enabled && on) out.enable = 'disable';
  }

  if (p.state !== undefined) {
    const running = isRunning(s.active);
    const definitionMoves = contentChanges || out.reloadOnly;
    if (p.state === 'started' && !running) out.run = 'start';
    if (p.state === 'stopped' && running) out.run = 'stop';
    if (p.state === 'restarted') out.run = !running ? 'start' : definitionMoves ? 'restart' : undefined;
    if (p.state === 'reloaded') out.run = !running ? 'start' : definitionMoves ? 'reload' : undefined;
  }
  return out;
}

const utf8 = new TextDecoder('utf-8', { fatal: false });
const textOfFile = (s: PathState): string | null => (s.kind === 'file' ? utf8.decode(s.content ?? Buffer.alloc(0)) : null);

const RUN_WORDS: Record<RunAction, string> = { start: 'start', stop: 'stop', restart: 'restart', reload: 'reload' };

export function planUnit(p: SystemdUnitParams, s: SystemdUnitState, env: PlanEnv): Plan<SystemdUnitUndo> {
  const a = unitActions(p, s, env);
  const running = isRunning(s.active);
  if (!a.file && !a.reloadOnly && !a.enable && !a.run) {
    const now = [`${unitPath(p.name)} is up to date`, p.enabled !== undefined ? (p.enabled ? 'enabled' : 'disabled') : '', p.state !== undefined ? (running ? 'active' : 'inactive') : ''].filter(
      Boolean,
    );
    return { changed: false, summary: `${p.name}: ${now.join(', ')}`, undo: null };
  }
  const parts: string[] = [];
  if (a.file) parts.push(`${a.file.summary}; daemon-reload`);
  if (a.reloadOnly) parts.push(`daemon-reload (systemd loaded an older ${unitPath(p.name)})`);
  if (a.enable) parts.push(`${a.enable} ${p.name} (${s.enabled} → ${a.enable === 'disable' ? 'disabled' : 'enabled'})`);
  if (a.run) {
    const why =
      a.run === 'start' && (p.state === 'restarted' || p.state === 'reloaded')
        ? ` (${p.state === 'restarted' ? 'restart' : 'reload'}: it was ${s.active})`
        : a.run === 'restart' || a.run === 'reload'
          ? ' (its definition changed)'
          : '';
    parts.push(`${RUN_WORDS[a.run]} ${p.name}${why} (${s.active} → ${a.run === 'stop' ? 'inactive' : 'active'})`);
  }
  const undo: SystemdUnitUndo = { name: p.name, file: a.file?.undo ?? null };
  if (a.enable) {
    undo.enabled = s.enabled;
    if (a.enable !== 'disable' && s.missingDirs.length) undo.dirs = s.missingDirs;
  }
  if (a.run) {
    undo.active = running;
    if ((a.run === 'restart' || a.run === 'reload') && a.file) undo.again = a.run;
  }
  return {
    changed: true,
    action: a.file?.action === 'create' ? 'create' : 'change',
    summary: parts.join('; '),
    ...(a.file?.diff ? { diff: a.file.diff } : {}),
    undo,
  };
}

/** Shell: LoadState is something other than not-found (a file of the unit is there). */
const knownTest = (n: string) => `{ l=$(systemctl show -p LoadState --value -- ${n} 2>/dev/null); [ -n "$l" ] && [ "$l" != not-found ]; }`;

/** Shell: waits up to 3 s for the unit to be active (or not), then fails with `why` if it is not. */
function settle(n: string, active: boolean, why: string): string {
  const test = `${active ? '' : '! '}systemctl is-active --quiet -- ${n}`;
  return [`i=0; while ! { ${test}; } && [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done`, `${test} || { printf '%s\\n' ${quote(why)} >&2; false; }`].join('\n');
}

/**
 * The one rollback: the controller, undo, recover and the lockout watchdog run this script. Each
 * part is tried even when one before it failed; the script fails if any did.
 */
export function rollbackScript(u: SystemdUnitUndo): string {
  const n = quote(u.name);
  const lines = [PATH, 'hs_all=0', `fail() { printf '%s\\n' "$1" >&2; hs_all=1; }`];
  // Stop what it started, on the definition systemd has loaded.
  if (u.active === false) lines.push(`if systemctl is-active --quiet -- ${n}; then systemctl stop -- ${n} || fail ${quote(`systemctl stop ${u.name} failed`)}; fi`);
  // Its links go while its own file is still there: disable reads the [Install] section (Also=).
  if (u.enabled !== undefined && u.enabled !== 'enabled') {
    lines.push(`if [ "$(systemctl is-enabled -- ${n} 2>/dev/null)" = enabled ]; then systemctl disable -- ${n} >/dev/null 2>&1 || fail ${quote(`systemctl disable ${u.name} failed`)}; fi`);
  }
  if (u.file) {
    lines.push(`( ${rollbackPathScript(u.file)}\n) || fail ${quote(`putting back ${u.file.path} failed`)}`);
    lines.push(`systemctl daemon-reload || fail 'systemctl daemon-reload failed'`);
  }
  if (u.enabled === 'enabled') {
    // Links as the restored file's [Install] section has them.
    const how = u.file ? 'reenable' : 'enable';
    lines.push(
      `if ${knownTest(n)}; then systemctl ${how} -- ${n} >/dev/null 2>&1 || fail ${quote(`systemctl ${how} ${u.name} failed`)}; else fail ${quote(`${u.name} no longer exists: it cannot be enabled again`)}; fi`,
    );
  }
  if (u.dirs?.length) {
    // The folders enable made for the links, once empty: after disable, or after reenable on the
    // restored file (whose [Install] section may want other folders).
    const rm = u.dirs.map(
      (d) => `if [ -d ${quote(d.slice(UNIT_DIR.length + 1))} ] && [ ! -L ${quote(d.slice(UNIT_DIR.length + 1))} ]; then rmdir -- ${quote(d.slice(UNIT_DIR.length + 1))} 2>/dev/null; fi`,
    );
    lines.push(`( ${withSafePath([enterScript(UNIT_DIR, { missingOk: true }), ...rm, 'true'].join('\n'))}\n) || fail ${quote(`removing the link folders of ${u.name} failed`)}`);
  }
  if (u.active === true) {
    const act = u.again && u.file ? u.again : 'start';
    const run = act === 'start' ? `systemctl is-active --quiet -- ${n} || systemctl start -- ${n}` : `systemctl ${act} -- ${n}`;
    lines.push(
      `if ${knownTest(n)}; then`,
      `  if ${run}; then ${settle(n, true, `${act} ${u.name} did not take: it is not active`)} || hs_all=1; else fail ${quote(`systemctl ${act} ${u.name} failed`)}; fi`,
      `else fail ${quote(`${u.name} no longer exists: it cannot be started again`)}; fi`,
    );
  }
  lines.push('exit $hs_all');
  return lines.join('\n');
}

/** Shell: daemon-reload, then the unit must load (a bad setting fails here, with systemd's own words). */
export function reloadScript(name: string): string {
  const n = quote(name);
  return [
    PATH,
    'systemctl daemon-reload || exit 1',
    `l=$(systemctl show -p LoadState --value -- ${n})`,
    `if [ "$l" != loaded ]; then echo "systemd did not load ${name} (LoadState=$l): $(systemctl show -p LoadError --value -- ${n})" >&2; systemd-analyze verify ${quote(unitPath(name))} 2>&1 | tail -n 5 >&2; exit 1; fi`,
  ].join('\n');
}

export function runScript(name: string, a: RunAction, oneshot: boolean): string {
  const n = quote(name);
  const want = a !== 'stop';
  const hint = want && oneshot ? ' (a Type=oneshot service ends when its command does: add RemainAfterExit=yes, or leave out state)' : '';
  return [PATH, `systemctl ${a} -- ${n} || exit 1`, settle(n, want, `systemctl ${a} ${name} reported success, but it is ${want ? 'not active' : 'still active'}${hint}`)].join('\n');
}

/** A unit from its undo data and params: the name everything is about, and its file's undo, as journaled. */
function undoMismatch(p: SystemdUnitParams, u: UndoData): string | undefined {
  if (u.name !== p.name) return `its undo data is for unit ${JSON.stringify(u.name)}, not ${p.name}`;
  if (u.enabled !== undefined && (typeof u.enabled !== 'string' || !/^[a-z-]+$/.test(u.enabled))) return 'its undo data holds a boot state that is not a word';
  if (u.active !== undefined && typeof u.active !== 'boolean') return 'its undo data holds a running state that is not true or false';
  if (u.again !== undefined && u.again !== 'restart' && u.again !== 'reload') return `its undo data asks for ${JSON.stringify(u.again)}, not a restart or reload`;
  if (u.dirs !== undefined) {
    if (!Array.isArray(u.dirs)) return 'its undo data holds link folders that are not a list';
    const bad = u.dirs.find((d) => typeof d !== 'string' || !new RegExp(`^${UNIT_DIR}/[A-Za-z0-9_:@\\\\.-]+\\.(wants|requires|upholds)$`).test(d) || d.includes('/..'));
    if (bad !== undefined) return `its undo data would remove ${JSON.stringify(bad)}, which is not a link folder in ${UNIT_DIR}`;
  }
  if (u.file !== null && u.file !== undefined) {
    if (typeof u.file !== 'object') return 'its undo data for the unit file is not an object';
    return pathUndoMismatch(unitPath(p.name), u.file as UndoData);
  }
  return undefined;
}

function undoSummary(u: UndoData): string {
  const name = str(u, 'name') ?? '?';
  const parts: string[] = [];
  if (u.active === false) parts.push(`stop ${name}`);
  if (typeof u.enabled === 'string' && u.enabled !== 'enabled') parts.push(`disable ${name}`);
  if (u.file && typeof u.file === 'object') parts.push(`${pathUndoSummary(u.file as UndoData)}; daemon-reload`);
  if (u.enabled === 'enabled') parts.push(`enable ${name} again`);
  if (u.active === true) parts.push(`${u.again && u.file ? u.again : 'start'} ${name} again`);
  return parts.length ? parts.join('; ') : `nothing to put back for ${name}`;
}

/** Only the parts of the undo that apply made (its first `made` of file, links, running state), for its own clean-up. */
function madeSoFar(u: SystemdUnitUndo, made: { file: boolean; enable: boolean; run: boolean }): SystemdUnitUndo {
  return {
    name: u.name,
    file: made.file ? u.file : null,
    ...(made.enable && u.enabled !== undefined ? { enabled: u.enabled, ...(u.dirs ? { dirs: u.dirs } : {}) } : {}),
    ...(made.run && u.active !== undefined ? { active: u.active, ...(u.again ? { again: u.again } : {}) } : {}),
  };
}

export const systemdUnitStep: StepType<SystemdUnitParams, SystemdUnitState, SystemdUnitUndo> = {
  type: 'systemd_unit',
  schema: systemdUnitSchema,
  async prepare(ctx, p) {
    if (p.src === undefined) return p;
    return { ...p, rendered: await renderSource(ctx, 'systemd_unit', p.src, p.vars) };
  },
  check: checkUnit,
  plan: planUnit,
  async apply(ctx, p, plan, s) {
    const undo = plan.undo!;
    const env = { runId: ctx.runId, step: ctx.step, backupDir: ctx.backupDir };
    const a = unitActions(p, s, env);
    const made = { file: false, enable: false, run: false };
    const what = `on ${ctx.host}`;
    try {
      if (a.file) {
        // The plan's own undo data: its backup path is the one journaled.
        await applyPath(
          ctx,
          { path: unitPath(p.name), state: 'present', content: Buffer.from(contentOf(p), 'utf8'), mode: 0o644, owner: 'root', group: 'root' },
          { ...a.file, undo: undo.file },
          s.file,
        );
        made.file = true;
        await runOk(ctx, reloadScript(p.name), `loading ${unitPath(p.name)} ${what}`);
      } else if (a.reloadOnly) await runOk(ctx, reloadScript(p.name), `daemon-reload for ${p.name} ${what}`);
      if (a.enable) {
        made.enable = true;
        await runOk(ctx, `${PATH}\nsystemctl ${a.enable} -- ${quote(p.name)}`, `systemctl ${a.enable} ${p.name} ${what}`);
      }
      if (a.run) {
        made.run = true;
        const oneshot = (parseUnit(contentOf(p)).sections.get('Service') ?? []).some(([k, v]) => k === 'Type' && v === 'oneshot');
        await runOk(ctx, runScript(p.name, a.run, oneshot), `systemctl ${a.run} ${p.name} ${what}`);
      }
    } catch (e) {
      // The engine rolls back completed steps only: what this one changed before it failed goes back here.
      if (made.file || made.enable || made.run) {
        try {
          await runOk(ctx, rollbackScript(madeSoFar(undo, made)), `putting ${p.name} back ${what}`);
        } catch (r) {
          throw new StepError(`${(e as Error).message}; putting back what the step had already changed also failed: ${(r as Error).message}`, { cause: e });
        }
      }
      throw e;
    }
    return {};
  },
  rollback: async (ctx, _p, undo) => {
    await runOk(ctx, rollbackScript(undo), `putting unit ${undo.name} back on ${ctx.host}`);
  },
  hostRollback: (_p, undo) => rollbackScript(undo),
  // Not the link folders: they follow from the content, which undo and recover read from the journal
  // (a template's by digest only); the boot state already says whether the links are there.
  stateKey: (_p, s) => ({ systemd: s.systemd, load: s.load, running: isRunning(s.active), enabled: s.enabled, stale: s.stale, file: pathKey(s.file) }),
  // Enabling writes links beside the unit file; starting a unit writes what it likes (as a service step's start does).
  footprint: (p) => {
    const services = [`service:${p.name}`, ...(p.name.endsWith('.service') ? [`service:${p.name.slice(0, -'.service'.length)}`] : [])];
    const reads = [`path:${unitPath(p.name)}`, ...services];
    const writes = [`path:${unitPath(p.name)}`, ...services, ...(p.enabled !== undefined ? [`path:${UNIT_DIR}`] : []), ...(p.state !== undefined ? SERVICE_WRITES : [])];
    return { reads, writes };
  },
  // A unit it started, restarted or reloaded may have written anything (as a service step's start may).
  wrote: (_p, undo) => [...pathWrote(undo?.file ?? null), ...(undo?.active !== undefined ? ['path:*'] : [])],
  undoSummary,
  undoMismatch,
  staticCheck: async (raw: UndoData, env: StaticEnv): Promise<StaticProblem[]> => {
    if (typeof raw.src === 'string') {
      const locals = raw.vars && typeof raw.vars === 'object' && !Array.isArray(raw.vars) ? Object.keys(raw.vars) : [];
      const found = await sourceProblems({ src: raw.src }, { ...env, checkTemplate: (file, _path, local) => env.checkTemplate(file, ['src'], local) }, 'templates', 'template', locals);
      return found.map((x) => ({ ...x, path: ['src'] }));
    }
    if (typeof raw.content === 'string' && typeof raw.name === 'string' && UNIT_NAME.test(raw.name) && !raw.content.includes('{{')) {
      const why = contentProblem(raw.name, raw.content);
      if (why) return [{ path: ['content'], message: why }];
    }
    return [];
  },
};
