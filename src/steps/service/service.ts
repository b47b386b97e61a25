import { flag } from '../accounts.js';
import { z } from 'zod';
import { compact, str } from '../undo-text.js';
import { StepError } from '../../errors.js';
import { quote } from '../../shell/script.js';
import { randomBytes } from 'node:crypto';
import { runOk, type Plan, type StepContext, type StepType } from '../step.js';

export const serviceSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9@_.:+-]*$/, 'not a valid service name (letters, digits, @ _ . : + -)'),
    state: z.enum(['started', 'stopped', 'restarted', 'reloaded']).optional(),
    enabled: flag.optional(),
  })
  .strict()
  .superRefine((p, ctx) => {
    if (p.state === undefined && p.enabled === undefined) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'nothing to do: give state and/or enabled', path: ['state'] });
    }
  });

export type ServiceParams = z.output<typeof serviceSchema>;
export type Init = 'systemd' | 'sysvinit';

export interface ServiceState {
  init: Init;
  exists: boolean;
  running: boolean;
  /**
   * sysvinit: `enabled` (an S link in a runlevel 2–5), `disabled` (only K links there), `none` (no rc links).
   * systemd: what `systemctl is-enabled` says (enabled, disabled, static, masked, …); `none` for an
   * init script without a unit of its own and without rc links (is-enabled calls that disabled,
   * but a rollback to disabled would leave K links that were not there).
   */
  enabled: string;
}

/** Where starting, stopping or enabling a service writes: runtime, state, logs, boot links. */
export const SERVICE_WRITES = [
  '/run',
  '/var/run',
  '/var/lib',
  '/var/log',
  '/var/cache',
  '/var/spool',
  '/tmp',
  '/etc/systemd/system',
  ...['0', '1', '2', '3', '4', '5', '6', 'S'].map((l) => `/etc/rc${l}.d`),
].map((p) => `path:${p}`);

/** The previous state of what the step changes: rollback converges back to it. */
export interface ServiceUndo {
  name: string;
  init: Init;
  running?: boolean;
  enabled?: string;
}

type RunAction = 'start' | 'stop' | 'restart' | 'reload';

const SYSTEMD_ENABLED = ['enabled', 'enabled-runtime', 'static', 'indirect', 'generated', 'alias'];

export function isEnabled(s: Pick<ServiceState, 'init' | 'enabled'>): boolean {
  return s.init === 'systemd' ? SYSTEMD_ENABLED.includes(s.enabled) : s.enabled === 'enabled';
}

/** What must be done to reach `p` from `s`; shared by plan and apply (which re-checks first). */
export function actions(p: ServiceParams, s: ServiceState): { run?: RunAction; enable?: boolean } {
  const out: { run?: RunAction; enable?: boolean } = {};
  if (p.state === 'started' && !s.running) out.run = 'start';
  if (p.state === 'stopped' && s.running) out.run = 'stop';
  if (p.state === 'restarted') out.run = s.running ? 'restart' : 'start';
  // A reload of a stopped service starts it, as Ansible does: afterwards it runs the new config.
  if (p.state === 'reloaded') out.run = s.running ? 'reload' : 'start';
  if (p.enabled !== undefined && p.enabled !== isEnabled(s)) out.enable = p.enabled;
  if (s.exists && s.init === 'systemd' && out.enable !== undefined) {
    if (s.enabled === 'masked') throw new StepError(`${p.name} is masked: unmask it first (systemctl unmask ${p.name})`);
    if (!out.enable && s.enabled === 'static') throw new StepError(`${p.name} is a static unit: it cannot be disabled`);
  }
  return out;
}

const STATE_WORDS: Record<NonNullable<ServiceParams['state']>, RunAction> = { started: 'start', stopped: 'stop', restarted: 'restart', reloaded: 'reload' };

export function planService(p: ServiceParams, s: ServiceState): Plan<ServiceUndo> {
  const a = actions(p, s);
  const n = p.name;
  if (!s.exists) {
    const what = [p.state ? `${STATE_WORDS[p.state]} ${n}` : '', p.enabled !== undefined ? `${p.enabled ? 'enable' : 'disable'} ${n}` : ''].filter(Boolean).join(', ');
    return {
      changed: true,
      summary: `${what} — ${n} is not installed yet: apply fails unless an earlier step installs it`,
      undo: { name: n, init: s.init, running: false, ...(p.enabled !== undefined ? { enabled: s.enabled } : {}) },
    };
  }
  if (a.run === undefined && a.enable === undefined) {
    const now = [s.running ? 'running' : 'stopped', p.enabled !== undefined ? (isEnabled(s) ? 'enabled' : 'disabled') : ''].filter(Boolean).join(' and ');
    return { changed: false, summary: `${n} is ${now}`, undo: null };
  }
  const parts: string[] = [];
  if (a.run) {
    const why = a.run === 'start' && p.state === 'restarted' ? ' (restart: it was stopped)' : a.run === 'start' && p.state === 'reloaded' ? ' (reload: it was stopped)' : '';
    parts.push(`${a.run} ${n}${why}`);
  }
  if (a.enable !== undefined) parts.push(`${a.enable ? 'enable' : 'disable'} ${n} at boot (${s.enabled} → ${a.enable ? 'enabled' : 'disabled'})`);
  return {
    changed: true,
    summary: parts.join('; '),
    undo: { name: n, init: s.init, ...(a.run ? { running: s.running } : {}), ...(a.enable !== undefined ? { enabled: s.enabled } : {}) },
  };
}

const PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; export PATH';

/**
 * Shell: the init script's own `status` (its exit code says whether the service runs). Run
 * directly, as `service` would run it: the `service` wrapper is a shell script that starts two
 * `basename`s and an `env` before it, four processes on every read of every service. Only on a
 * host without systemd, where the init scripts do not hand over to systemctl.
 */
function sysvStatus(n: string): string {
  return `/etc/init.d/${n} status >/dev/null 2>&1 </dev/null`;
}

export function checkScript(name: string, init: Init): string {
  const n = quote(name);
  if (init === 'systemd') {
    return [
      PATH,
      `load=$(systemctl show -p LoadState --value -- ${n} 2>/dev/null)`,
      'if [ -z "$load" ] || [ "$load" = not-found ]; then echo exists=0; exit 0; fi',
      'echo exists=1',
      `echo "active=$(systemctl is-active -- ${n} 2>/dev/null)"`,
      `echo "enabled=$(systemctl is-enabled -- ${n} 2>/dev/null)"`,
      // An init script systemd runs through its sysv generator: its boot state is its rc links.
      `src=$(systemctl show -p SourcePath --value -- ${n} 2>/dev/null)`,
      'case $src in /etc/init.d/*) echo sysv=1; s=${src##*/}',
      '  for f in /etc/rc[0-6S].d/[SK][0-9][0-9]"$s"; do if [ -e "$f" ] || [ -L "$f" ]; then echo "link=$f"; fi; done;;',
      'esac',
    ].join('\n');
  }
  return [
    PATH,
    `if [ ! -x /etc/init.d/${n} ]; then echo exists=0; exit 0; fi`,
    'echo exists=1',
    `${sysvStatus(n)}; echo "status=$?"`,
    `for f in /etc/rc[0-6S].d/[SK][0-9][0-9]${n}; do if [ -e "$f" ] || [ -L "$f" ]; then echo "link=$f"; fi; done`,
  ].join('\n');
}

export function parseCheck(out: string, init: Init): ServiceState {
  const kv: Record<string, string> = {};
  const links: string[] = [];
  for (const line of out.split('\n')) {
    const i = line.indexOf('=');
    if (i <= 0) continue;
    const k = line.slice(0, i);
    const v = line.slice(i + 1).trim();
    if (k === 'link') links.push(v);
    else kv[k] = v;
  }
  const exists = kv.exists === '1';
  if (init === 'systemd') {
    const active = kv.active ?? '';
    const said = kv.enabled || 'disabled';
    const enabled = !exists ? 'not-found' : kv.sysv === '1' && said === 'disabled' && !links.length ? 'none' : said;
    return { init, exists, running: exists && ['active', 'reloading', 'activating'].includes(active), enabled };
  }
  const enabled = links.some((l) => /^\/etc\/rc[2-5]\.d\/S/.test(l)) ? 'enabled' : links.length ? 'disabled' : 'none';
  return { init, exists, running: exists && kv.status === '0', enabled };
}

async function checkService(ctx: StepContext, name: string, init: Init): Promise<ServiceState> {
  const r = await ctx.exec(checkScript(name, init));
  if (r.code !== 0) throw new StepError(`cannot read the state of service ${name} on ${ctx.host}: ${r.stderr.trim() || `exit ${r.code}`}`, { code: r.code, stderr: r.stderr });
  return parseCheck(r.stdout, init);
}

const initOf = (ctx: StepContext): Init => (ctx.facts.init === 'systemd' ? 'systemd' : 'sysvinit');

/** Shell tests for the host scripts, the same reads as checkScript. */
function existsTest(name: string, init: Init): string {
  const n = quote(name);
  return init === 'systemd' ? `{ l=$(systemctl show -p LoadState --value -- ${n} 2>/dev/null); [ -n "$l" ] && [ "$l" != not-found ]; }` : `[ -x /etc/init.d/${n} ]`;
}

function runningTest(name: string, init: Init): string {
  const n = quote(name);
  return init === 'systemd' ? `systemctl is-active --quiet -- ${n}` : sysvStatus(n);
}

/**
 * systemd: a unit file changed on disk since systemd read it (a file or template step just wrote
 * it) is read again first, or the start would run the old definition.
 */
function runCommand(name: string, init: Init, a: RunAction): string {
  const n = quote(name);
  if (init !== 'systemd') return `service ${n} ${a}`;
  return `{ [ "$(systemctl show -p NeedDaemonReload --value -- ${n} 2>/dev/null)" != yes ] || systemctl daemon-reload; } && systemctl ${a} -- ${n}`;
}

function enableCommand(name: string, init: Init, target: string): string {
  const n = quote(name);
  if (init === 'systemd') {
    // No rc links at all, as the init script had before: systemctl has no word for that.
    if (target === 'none') return `s=$(systemctl show -p SourcePath --value -- ${n}) && update-rc.d -f "\${s##*/}" remove`;
    return `systemctl ${SYSTEMD_ENABLED.includes(target) ? 'enable' : 'disable'} -- ${n}`;
  }
  if (target === 'enabled') return `update-rc.d ${n} defaults && update-rc.d ${n} enable`;
  if (target === 'disabled') return `update-rc.d ${n} defaults && update-rc.d ${n} disable`;
  return `update-rc.d -f ${n} remove`;
}

/**
 * control() and then, in the same exec, the service's state as check() reads it: the state the
 * change left, with no exec of its own.
 */
async function controlAndRead(ctx: StepContext, cmd: string, what: string, name: string, init: Init, running?: boolean): Promise<ServiceState> {
  const mark = `hostsmith-after-${randomBytes(8).toString('hex')}`;
  // An init script may return before its daemon has written its pid file: give it up to 3 s to
  // reach the state asked for before reading it back (a separate read used to give it a round trip).
  const settle = running === undefined ? [] : [`i=0; while ${running ? '! ' : ''}${runningTest(name, init)} && [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done`];
  const r = await ctx.exec(
    [PATH, 'out=$(mktemp)', `${cmd} >"$out" 2>&1 </dev/null`, 'rc=$?', 'cat "$out"; rm -f "$out"', '[ $rc -eq 0 ] || exit $rc', ...settle, `printf '\\n%s\\n' ${mark}`, checkScript(name, init)].join(
      '\n',
    ),
  );
  const at = r.stdout.indexOf(`\n${mark}\n`);
  if (r.code !== 0 || at < 0) {
    const said = (at < 0 ? r.stdout : r.stdout.slice(0, at)).trim().split('\n').slice(-10).join('\n') || r.stderr.trim();
    throw new StepError(`${what} on ${ctx.host} failed (exit ${r.code})${said ? `: ${said}` : ''}`, { code: r.code, stderr: r.stderr || r.stdout });
  }
  return parseCheck(r.stdout.slice(at + mark.length + 2), init);
}

async function setRunning(ctx: StepContext, name: string, init: Init, a: RunAction): Promise<ServiceState> {
  const want = a !== 'stop';
  const after = await controlAndRead(ctx, runCommand(name, init, a), `${a} ${name}`, name, init, want);
  if (after.running !== want) {
    throw new StepError(`${a} ${name} on ${ctx.host} reported success, but the service is ${after.running ? 'still running' : 'not running'}`);
  }
  return after;
}

/**
 * Puts a service back to the running and boot state it had: boot state first, then running, each
 * only when it differs, waiting up to 3 s for a start or stop to take (an init script may return
 * before its daemon wrote its pid file). A service that is gone is fine unless it has to run.
 */
function rollbackScript(undo: ServiceUndo): string {
  const needed = undo.running || (undo.enabled !== undefined && isEnabled({ init: undo.init, enabled: undo.enabled }));
  const gone = `service ${undo.name} does not exist (${undo.init === 'systemd' ? 'no systemd unit of that name' : `no /etc/init.d/${undo.name}`})`;
  const lines = [PATH, `if ! ${existsTest(undo.name, undo.init)}; then ${needed ? `echo ${quote(gone)} >&2; exit 1` : 'exit 0'}; fi`];
  if (undo.enabled !== undefined) lines.push(`${enableCommand(undo.name, undo.init, undo.enabled)} >/dev/null || exit 1`);
  if (undo.running !== undefined) {
    const a: RunAction = undo.running ? 'start' : 'stop';
    // As a function: `! ! test` is not valid sh, and the stop case needs the test negated.
    lines.push(`reached() { ${undo.running ? '' : '! '}${runningTest(undo.name, undo.init)}; }`);
    lines.push(
      'if ! reached; then',
      `  ${runCommand(undo.name, undo.init, a)} >/dev/null 2>&1 </dev/null`,
      '  i=0; while ! reached && [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done',
      `  reached || { echo ${quote(`${a} ${undo.name} did not take: the service is ${undo.running ? 'not running' : 'still running'}`)} >&2; exit 1; }`,
      'fi',
    );
  }
  return lines.join('\n');
}

function missing(ctx: StepContext, name: string, init: Init): StepError {
  return new StepError(`service ${name} does not exist on ${ctx.host} (${init === 'systemd' ? 'no systemd unit of that name' : `no /etc/init.d/${name}`})`);
}

export const serviceStep: StepType<ServiceParams, ServiceState, ServiceUndo> = {
  type: 'service',
  schema: serviceSchema,
  check: (ctx, p) => checkService(ctx, p.name, initOf(ctx)),
  plan: (p, s) => planService(p, s),
  async apply(ctx, p, _plan, s) {
    const init = initOf(ctx);
    if (!s.exists) throw missing(ctx, p.name, init);
    const a = actions(p, s);
    // Each control exec reads the service back: the last read is the journal's post-state.
    let after: ServiceState | undefined;
    if (a.enable !== undefined) after = await controlAndRead(ctx, enableCommand(p.name, init, a.enable ? 'enabled' : 'disabled'), `${a.enable ? 'enable' : 'disable'} ${p.name}`, p.name, init);
    if (a.run) after = await setRunning(ctx, p.name, init, a.run);
    return after ? { state: after } : {};
  },
  // The one rollback: the controller, undo, recover and the lockout watchdog all run this script.
  hostRollback: (_p, undo) => rollbackScript(undo),
  hostRun(p, env) {
    const init = env.init;
    const lines = [PATH, `${existsTest(p.name, init)} || { echo ${quote(`service ${p.name} does not exist`)} >&2; exit 1; }`];
    if (p.enabled !== undefined) lines.push(`${enableCommand(p.name, init, p.enabled ? 'enabled' : 'disabled')} >/dev/null || exit 1`);
    if (p.state) {
      const running = runningTest(p.name, init);
      const run = (a: RunAction) => `${runCommand(p.name, init, a)} >/dev/null 2>&1 </dev/null || exit 1`;
      if (p.state === 'started') lines.push(`${running} || ${run('start')}`);
      if (p.state === 'stopped') lines.push(`! ${running} || ${run('stop')}`);
      if (p.state === 'restarted') lines.push(`if ${running}; then ${run('restart')}; else ${run('start')}; fi`);
      if (p.state === 'reloaded') lines.push(`if ${running}; then ${run('reload')}; else ${run('start')}; fi`);
    }
    return lines.join('\n');
  },
  rollback: async (ctx, _p, undo) => {
    await runOk(ctx, rollbackScript(undo), `restoring service ${undo.name} on ${ctx.host}`);
  },
  undoMismatch: (p, u) => (u.name === p.name ? undefined : `its undo data is for service ${JSON.stringify(u.name)}, not ${p.name}`),
  undoSummary: (u) => {
    if (typeof u.name !== 'string') return compact(u);
    const parts = [typeof u.running === 'boolean' ? (u.running ? 'running' : 'stopped') : '', str(u, 'enabled') ? `enabled: ${str(u, 'enabled')}` : ''].filter(Boolean);
    return `put ${u.name} back to ${parts.join(', ') || 'its previous state'}`;
  },
  // Starting or enabling a service writes its runtime and state files, logs and boot links: that is
  // what plans assume, so configuration steps after it stay exactly planned. Its scripts may write
  // anything else (ssh host keys on a first start), so once it ran every batched file read is dropped.
  footprint: (p) => ({ reads: [`service:${p.name}`], writes: [`service:${p.name}`, ...SERVICE_WRITES] }),
  wrote: () => ['path:*'],
  gone: async (ctx, p) => ((await checkService(ctx, p.name, initOf(ctx))).exists ? null : `service ${p.name} is no longer installed`),
};
