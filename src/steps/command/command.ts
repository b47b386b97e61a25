import { existsScript } from '../path-batch.js';
import { posix } from 'node:path';
import { compact, str } from '../undo-text.js';
import { z } from 'zod';
import { ANYTHING } from '../footprint.js';
import { StepError } from '../../errors.js';
import { commandScript, quote } from '../../shell/script.js';
import { sha256, tail, type StepContext, type StepType } from '../step.js';
import { hostPath, ownerName } from '../paths.js';
import { guardScript, runOneExec } from '../../shell/one-exec.js';

export const commandSchema = z
  .object({
    run: z.string().min(1),
    rollback: z.string().optional(),
    creates: hostPath.optional(),
    removes: hostPath.optional(),
    cwd: hostPath.optional(),
    // A name the shell cannot export would fail only on the hosts: refused at load instead.
    env: z
      .record(
        z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'an environment variable name is letters, digits and "_", not starting with a digit'),
        z.union([z.string(), z.number(), z.boolean()]).transform(String),
      )
      .optional(),
    user: ownerName('user').optional(),
  })
  .strict();

export type CommandParams = z.output<typeof commandSchema>;

export interface CommandState {
  createsExists?: boolean;
  removesExists?: boolean;
}

export interface CommandUndo {
  run: string;
  cwd?: string;
  env?: Record<string, string>;
  user?: string;
}

/** Exit status of a command killed by SIGKILL, as sh reports it. */
const KILLED = 128 + 9;

function formatMs(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

async function runChecked(ctx: StepContext, cmd: string, o: Omit<CommandUndo, 'run'>, what: string) {
  const started = Date.now();
  // `cd -- -` goes to $OLDPWD: a folder named "-" is reached as ./-.
  const r = await ctx.exec(cmd, { cwd: o.cwd === '-' ? './-' : o.cwd, env: o.env, user: o.user });
  return judge(ctx, r, started, what);
}

/** The command's result as the step reports it: a timeout or a non-zero exit is a StepError. */
function judge<R extends { code: number; stdout: string; stderr: string; timedOut?: boolean }>(ctx: StepContext, r: R, started: number, what: string): R {
  // `timeout -k 5` sends SIGKILL 5 s after a SIGTERM the command ignored: 137 (128 + 9), not 124.
  const killed = r.code === KILLED;
  if (r.timedOut || (killed && ctx.timeoutMs !== undefined && Date.now() - started >= ctx.timeoutMs)) {
    const limit = ctx.timeoutMs !== undefined ? ` after ${formatMs(ctx.timeoutMs)}` : '';
    const how = killed ? ', ignored SIGTERM and was killed (SIGKILL)' : ' and was stopped';
    throw new StepError(`${what} timed out${limit}${how}; if it needs longer, raise the step's \`timeout\``, { code: r.code, stderr: r.stderr });
  }
  if (r.code !== 0) {
    const err = tail(r.stderr, 20) || tail(r.stdout, 20);
    throw new StepError(`${what} exited ${r.code}${err ? `: ${err}` : ''}`, { code: r.code, stderr: r.stderr });
  }
  return r;
}

/**
 * The command as the host runs it without the controller (root, under `sh`): the same script the
 * transport sends (env, cwd), as `user` with that user's HOME when one is given, as sudo -H does.
 */
function hostCommand(cmd: string, o: Omit<CommandUndo, 'run'>): string {
  const script = commandScript(cmd, { cwd: o.cwd === '-' ? './-' : o.cwd, env: o.env });
  // The command's text (it may hold a secret) reaches sh on fd 3 from a here-document, never on a
  // command line any local user can read in ps; the command keeps its own stdin.
  const end = `HOSTSMITH_EOF_${sha256(script).slice(0, 16)}`;
  const run = `sh -c 'eval "$(cat <&3)"' 3<<'${end}'\n${script}\n${end}`;
  if (!o.user) return run;
  const u = quote(o.user);
  return `HOME=$(getent passwd ${u} | cut -d: -f6) runuser -u ${u} -- ${run}`;
}

/** Shell: `creates=0|1`, `removes=0|1` (as `test -e` finds them), the state check() reads; '' with neither. */
function probeScript(p: CommandParams): string {
  const line = (k: string, path: string) => `if [ -e ${quote(path)} ]; then echo ${k}=1; else echo ${k}=0; fi`;
  return [...(p.creates ? [line('creates', p.creates)] : []), ...(p.removes ? [line('removes', p.removes)] : [])].join('\n');
}

/** What probeScript prints for `s`. */
function probeAnswer(p: CommandParams, s: CommandState): string {
  return `${p.creates ? `creates=${s.createsExists ? 1 : 0}\n` : ''}${p.removes ? `removes=${s.removesExists ? 1 : 0}\n` : ''}`;
}

function parseProbe(out: string): CommandState | undefined {
  const s: CommandState = {};
  for (const m of out.matchAll(/^(creates|removes)=([01])$/gm)) s[m[1] === 'creates' ? 'createsExists' : 'removesExists'] = m[2] === '1';
  return out.trim() ? s : undefined;
}

export const commandStep: StepType<CommandParams, CommandState, CommandUndo> = {
  type: 'command',
  schema: commandSchema,
  async check(ctx, p) {
    const s: CommandState = {};
    const test = async (path: string) => (await ctx.exec(existsScript(path))).code === 0;
    if (p.creates) s.createsExists = await test(p.creates);
    if (p.removes) s.removesExists = await test(p.removes);
    return s;
  },
  plan(p, s) {
    if (p.creates && s.createsExists) return { changed: false, summary: `${p.creates} exists`, undo: null };
    if (p.removes && s.removesExists === false) return { changed: false, summary: `${p.removes} does not exist`, undo: null };
    return {
      changed: true,
      summary: `run: ${p.run}`,
      undo: p.rollback ? { run: p.rollback, cwd: p.cwd, env: p.env, user: p.user } : null,
    };
  },
  // Held to its `creates`/`removes` in the exec that runs it, unless it runs as another user (whose
  // view of those paths the step's own reads do not share): then it is read again at its turn.
  guarded: (p) => !p.user,
  async apply(ctx, p, _plan, planned) {
    const what = `command "${p.run}"`;
    const probe = probeScript(p);
    if (p.user || !probe) {
      const r = await runChecked(ctx, p.run, p, what);
      return { stdout: r.stdout, stderr: r.stderr, ...(probe ? {} : { state: {} }) };
    }
    // One exec: the guard (the paths as planned), the command as its own exec would run it, then
    // the paths again for the journal's post-state.
    const script = commandScript(p.run, { cwd: p.cwd === '-' ? './-' : p.cwd, env: p.env });
    const started = Date.now();
    const {
      r,
      kept: stdout,
      read,
      failed,
    } = await runOneExec(
      ctx,
      {
        guard: guardScript(probe, Buffer.from(probeAnswer(p, planned))),
        stages: [{ name: 'run', script: `s=${quote(script)} sh -c 'eval "$s"'`, out: '' }],
        read: probe,
      },
      `${[p.creates, p.removes].filter(Boolean).join(', ')} changed after it was read`,
    );
    if (failed && failed.stage !== 'read') judge(ctx, { code: failed.stage === 'run' ? failed.code : r.code || 1, stdout, stderr: failed.said, timedOut: r.timedOut }, started, what);
    const after = read === undefined || failed ? undefined : parseProbe(read);
    return { stdout, stderr: r.stderr, ...(after ? { state: after } : {}) };
  },
  hostRollback: (_p, undo) => hostCommand(undo.run, undo),
  hostRun(p) {
    const guards = [...(p.creates ? [`if [ -e ${quote(p.creates)} ]; then exit 0; fi`] : []), ...(p.removes ? [`if [ ! -e ${quote(p.removes)} ]; then exit 0; fi`] : [])];
    return [...guards, hostCommand(p.run, p)].join('\n');
  },
  async rollback(ctx, _p, undo) {
    await runChecked(ctx, undo.run, undo, `rollback command "${undo.run}"`);
  },
  undoSummary: (u) => (typeof u.run === 'string' ? `run ${JSON.stringify(u.run)}${str(u, 'user') ? ` as ${str(u, 'user')}` : ''}${str(u, 'cwd') ? ` in ${str(u, 'cwd')}` : ''}` : compact(u)),
  irreversibleWhy: 'a command without `rollback`',
  undoMismatch: (p, u) =>
    u.run === p.rollback && (u.user ?? undefined) === (p.user ?? undefined) && (u.cwd ?? undefined) === (p.cwd ?? undefined) ? undefined : "its undo data is not the step's own rollback command",
  runsAs: (p) => p.user || undefined,
  // A command with `creates`/`removes` is taken at its word for plans: it writes those paths, so the
  // steps after it stay exactly planned (were it wrong, their check at their turn catches it and
  // the run rolls back). Without either, it may write anything. Either way, once it ran, every
  // batched read is dropped: what it really wrote is unknown. `unless` is the engine's to count.
  footprint: (p) => {
    const guards = [p.creates, p.removes].filter((x): x is string => typeof x === 'string').map((x) => `path:${x}`);
    return { reads: guards, writes: guards.length ? guards : [ANYTHING] };
  },
  wrote: () => [ANYTHING],
  // A command cannot run in a folder that is gone, nor create its marker in one.
  gone: async (ctx, p) => {
    const dirs = [p.cwd, p.creates && posix.dirname(p.creates)].filter((d): d is string => typeof d === 'string' && d.startsWith('/'));
    for (const d of dirs) if ((await ctx.exec(`[ -d ${quote(d)} ]`)).code !== 0) return `its folder ${d} is no longer there`;
    return null;
  },
};
