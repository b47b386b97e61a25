/**
 * `hostsmith test <recipe>`: proves a recipe on throwaway sandbox hosts, the way a user would run
 * it — each stage runs this very CLI as a child process against a fresh host, and the host is then
 * judged from outside: by its overlay's upper directory (every byte the host changed since it was
 * made fresh), never by asking hostsmith.
 *
 * Stages (each on a fresh host unless it says otherwise):
 * - converge: apply exits 0;
 * - verify: the recipe's `verify:` commands hold after converge (the converge apply runs with
 *   lockout protection, which runs them over a new login);
 * - idempotence: a second apply on the converged host changes nothing;
 * - undo: `undo` of the converge run leaves zero residue (on a fresh host of its own when the
 *   second apply changed something, which undo would call drift);
 * - plan: a plan saved on a fresh host applies exactly (`apply --plan`), changing what it said;
 * - rollback: for each step k, a failure injected right after it; the rollback leaves zero residue;
 * - recover: the controller SIGKILLed at a random moment of an apply; `recover` leaves zero residue.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { InputError } from '../../errors.js';
import { newRunId } from '../../engine/fleet.js';
import { journalFile } from '../../engine/journal.js';
import { loadRecipe } from '../../recipe/load.js';
import { loadVarsFile, parseVarArgs, resolveVars } from '../../recipe/vars.js';
import type { Recipe } from '../../recipe/types.js';
import { cliIdentity, type GlobalOptions, type TargetCliOptions } from '../context.js';
import { loadInventory, resolveTargets } from '../../transport/targets.js';
import { addTargetOptions, addVarOptions, outputFor, type Ctx } from '../shared.js';

export const STAGES = ['converge', 'verify', 'idempotence', 'undo', 'plan', 'rollback', 'recover'] as const;
export type Stage = (typeof STAGES)[number];

interface TestCli extends GlobalOptions, Omit<TargetCliOptions, 'batch' | 'maxFail' | 'rollbackScope' | 'confirm'> {
  var?: string[];
  varsFile?: string;
  only?: string;
  skip?: string;
  parallel?: string;
  keep?: boolean;
  kind?: string;
  net?: string;
}

/** One stage's verdict (a rollback stage has one per step). */
export interface StageResult {
  stage: Stage;
  /** The step a rollback stage injected its failure after. */
  step?: string;
  ok: boolean;
  /** Not run, and why (no verify commands; an earlier stage on its host did not hold). */
  skipped?: string;
  detail: string;
  /** Paths the host was left with that it did not have before (residue). */
  residue?: string[];
  /** Steps that changed on a run that should have changed nothing. */
  changed?: string[];
  /** A host kept for inspection (--keep): how to reach it. */
  kept?: string;
  durationMs: number;
}

interface Child {
  code: number;
  events: Array<Record<string, unknown>>;
  stderr: string;
}

function parseStages(text: string | undefined, flag: string): Stage[] | undefined {
  if (text === undefined) return undefined;
  const names = text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const n of names) {
    if (!(STAGES as readonly string[]).includes(n)) throw new InputError(`${flag} ${text}: "${n}" is not a stage (stages: ${STAGES.join(', ')})`);
  }
  return names as Stage[];
}

/** The user named hosts (or an inventory): the stages run there, not on sandbox hosts. */
function named(o: TestCli): boolean {
  return o.hosts !== undefined || o.inventory !== undefined || o.limit !== undefined;
}

/** The target options to pass on to every run, and the names of the hosts they select (resolved now: a bad one is exit 2 before anything runs). */
async function namedTargets(o: TestCli): Promise<{ target: string[]; names: string[] }> {
  const inventory = o.inventory ? await loadInventory(resolve(o.inventory)) : undefined;
  const names = resolveTargets({ hosts: o.hosts, limit: o.limit, inventory, identity: cliIdentity(o.identity), sudo: o.sudo }).map((t) => t.name);
  const target = [
    ...(o.hosts !== undefined ? ['--hosts', o.hosts] : []),
    ...(o.limit !== undefined ? ['--limit', o.limit] : []),
    ...(o.inventory !== undefined ? ['-i', resolve(o.inventory)] : []),
    ...(o.identity !== undefined ? ['--identity', cliIdentity(o.identity)!] : []),
    ...(o.knownHosts !== undefined ? ['--known-hosts', resolve(o.knownHosts)] : []),
    ...(o.acceptNewHostKeys ? ['--accept-new-host-keys'] : []),
    ...(o.sudo ? ['--sudo'] : []),
    ...(o.concurrency !== undefined ? ['--concurrency', o.concurrency] : []),
  ];
  return { target, names };
}

/** The kind of sandbox host: --kind, else the recipe's `test.host`, else systemd when it manages systemd units. */
function hostKind(recipe: Recipe, flag: string | undefined): 'plain' | 'systemd' {
  if (flag !== undefined) {
    if (flag !== 'plain' && flag !== 'systemd') throw new InputError(`--kind ${flag}: a sandbox host is plain or systemd`);
    return flag;
  }
  if (recipe.test?.host) return recipe.test.host;
  return [...recipe.steps, ...recipe.handlers].some((s) => s.type === 'systemd_unit') ? 'systemd' : 'plain';
}

/**
 * The sandbox hosts' network: --net, else the recipe's `test.net`, else a network of each host's
 * own. That keeps hosts side by side from meeting on a port (two nginx on :80), and a firewall or
 * net.* sysctl the host's own. On this machine's network a firewall step would set this machine's
 * firewall: refused.
 */
function hostNet(recipe: Recipe, flag: string | undefined): 'shared' | 'private' {
  if (flag !== undefined && flag !== 'shared' && flag !== 'private') throw new InputError(`--net ${flag}: a sandbox host's network is shared or private`);
  const net = flag ?? recipe.test?.net ?? 'private';
  if (net === 'shared') {
    const firewall = [...recipe.steps, ...recipe.handlers].find((s) => s.type === 'firewall');
    if (firewall) {
      throw new InputError(
        `step "${firewall.name}" sets a firewall, and on this machine's network (${flag !== undefined ? '--net shared' : 'test.net: shared'}) that would be this machine's firewall; test it on hosts with networks of their own (--net private, the default). Nothing was started`,
      );
    }
  }
  return net;
}

/**
 * The kernel settings the recipe sets: a sandbox host shares this machine's kernel, so it gets a
 * copy of each of its own to change (the sandbox leaves out net.*, the host's own on a network
 * of its own; a templated name cannot be known here).
 */
function kernelSettings(recipe: Recipe): string[] {
  const keys = new Set<string>();
  for (const s of [...recipe.steps, ...recipe.handlers]) {
    const name = (s.params as { name?: unknown } | undefined)?.name;
    if (s.type === 'sysctl' && typeof name === 'string' && !name.includes('{{')) keys.add(name);
  }
  return [...keys];
}

export function registerTest(program: Command, ctx: Ctx): void {
  const command = program
    .command('test')
    .description('prove a recipe on throwaway sandbox hosts: converge, verify, idempotence, undo, plan exactness, rollback after each step, recover after a kill')
    .argument('<recipe>', 'recipe file')
    .option('--only <stages>', `run only these stages (comma list of ${STAGES.join(', ')})`)
    .option('--skip <stages>', 'leave out these stages (comma list)')
    .option('--parallel <n>', "hosts at once: stages run side by side on this many sandbox hosts (default: the recipe's test.parallel, else 2)")
    .option('--keep', 'keep the host of a stage that did not hold, and say how to ssh in')
    .option('--kind <kind>', "plain or systemd sandbox hosts (default: the recipe's test.host, else systemd when it has systemd_unit steps)")
    .option(
      '--net <net>',
      "private (each host a network of its own, reaching the web through a proxy here on ports 80 and 443) or shared (this machine's) (default: the recipe's test.net, else private)",
    );
  // With target options, the stages run on those hosts (not throwaway) instead of sandbox hosts.
  addVarOptions(addTargetOptions(command)).action(async (recipeArg: string, _o: unknown, cmd: Command) => {
    const o = cmd.optsWithGlobals<TestCli>();
    ctx.exit(await testCommand(recipeArg, o));
  });
}

async function testCommand(recipeArg: string, o: TestCli): Promise<number> {
  const out = outputFor(o);
  const file = resolve(recipeArg);
  const recipe = await loadRecipe(file);
  const only = parseStages(o.only, '--only');
  const skip = parseStages(o.skip, '--skip') ?? [];
  const wanted = new Set<Stage>((only ?? [...STAGES]).filter((s) => !skip.includes(s)));
  if (!wanted.size) throw new InputError('--only/--skip leave no stage to run');
  const parallel = Number(o.parallel ?? recipe.test?.parallel ?? 2);
  if (!Number.isInteger(parallel) || parallel < 1 || parallel > 16) throw new InputError(`--parallel ${o.parallel}: a whole number of hosts, 1 to 16`);
  // The vars are checked here, once, as every stage's apply would check them: a missing or bad one
  // is exit 2 before any host is started.
  resolveVars(recipe, { cli: parseVarArgs(o.var ?? []), ...(o.varsFile ? { file: await loadVarsFile(resolve(o.varsFile)) } : {}) });
  const runId = newRunId();
  const emit = (e: Record<string, unknown>) => {
    if (o.json) process.stdout.write(`${JSON.stringify({ ...e, runId, time: new Date().toISOString() })}\n`);
  };

  const steps = recipe.steps.map((s) => s.name);
  const jobs = planJobs(wanted, steps);
  const scratch = mkdtempSync(join(tmpdir(), 'hostsmith-test.'));
  const env: JobEnv = { recipe, file, o, scratch, named: named(o) };
  const results: StageResult[] = [];
  const report = (r: StageResult) => {
    results.push(r);
    out.say(stageLine(r));
    emit({ event: 'test-stage', ...r });
  };
  const kept: string[] = [];
  let sandboxDir: string | undefined;
  try {
    if (named(o)) {
      const { target, names } = await namedTargets(o);
      out.say(`Testing ${recipe.name} (${steps.length} steps) on ${names.join(', ')}, one stage after another: ${[...wanted].join(', ')}`);
      out.say(
        `These hosts are not throwaway: residue is judged by reading them through the recipe's own reads (a plan after each run must say what the plan before it said), not byte by byte. Each stage leaves them as it found them, by rollback or undo.`,
      );
      emit({ event: 'test-started', recipe: recipe.name, file, hosts: names, stages: [...wanted], steps: steps.length });
      const host = namedHosts(env, target, names);
      for (const job of jobs) {
        const got = await job(env, host);
        got.forEach(report);
        const broke = got.find((r) => !r.ok && !r.skipped);
        if (broke) {
          // The hosts may no longer be as they were: what a later stage saw would not be its own doing.
          const rest = jobs.length - jobs.indexOf(job) - 1;
          if (rest) out.say(`The other ${rest} job(s) were not run: after "${broke.step ? `${broke.stage} after ${broke.step}` : broke.stage}" the hosts may not be as they were.`);
          break;
        }
      }
    } else {
      const kind = hostKind(recipe, o.kind);
      const net = hostNet(recipe, o.net);
      // The sandbox is in the product so that this command can start it; loaded only here.
      const { prerequisites, describeMissing, startSandbox } = await import('../../sandbox/hosts.js');
      const pre = prerequisites({ kind, net });
      if (!pre.ok) {
        throw new InputError(`hostsmith test needs ${kind} sandbox hosts, and this machine cannot start them: ${describeMissing(pre.missing)}. Nothing was started`);
      }
      const where = net === 'private' ? ', each on a network of its own' : " on this machine's network";
      out.say(`Testing ${recipe.name} (${steps.length} steps) on throwaway ${kind} hosts${where}, ${Math.min(parallel, jobs.length)} at once: ${[...wanted].join(', ')}`);
      emit({ event: 'test-started', recipe: recipe.name, file, kind, net, stages: [...wanted], steps: steps.length });
      const sysctls = kernelSettings(recipe);
      const sb = await startSandbox({ count: Math.min(parallel, jobs.length), kind, net, sysctls, detached: o.keep === true });
      sandboxDir = sb.dir;
      const stopOnSignal = () => {
        void sb.stop().finally(() => process.exit(130));
      };
      process.once('SIGINT', stopOnSignal);
      process.once('SIGTERM', stopOnSignal);
      try {
        const free = sb.hosts.map((h) => sandboxHost(sb, h, recipe.test?.ignore ?? []));
        const count = free.length;
        const waiting: Array<() => void> = [];
        await Promise.all(
          jobs.map(async (job, i) => {
            while (!free.length) await new Promise<void>((r) => waiting.push(r));
            const host = free.shift()!;
            let keep = false;
            try {
              // Each job starts from a host exactly as the rootfs made it.
              if (i >= count) await host.fresh();
              const got = await job(env, host);
              for (const r of got) {
                if (!r.ok && !r.skipped && o.keep && !keep && host.sshHint) {
                  keep = true;
                  r.kept = host.sshHint;
                  kept.push(r.kept);
                }
                report(r);
              }
            } finally {
              if (!keep) free.push(host);
              waiting.shift()?.();
            }
          }),
        );
      } finally {
        process.off('SIGINT', stopOnSignal);
        process.off('SIGTERM', stopOnSignal);
        if (!kept.length) await sb.stop();
      }
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  const failed = results.filter((r) => !r.ok && !r.skipped);
  const held = results.filter((r) => r.ok && !r.skipped).length;
  out.say('');
  out.say(failed.length ? `${recipe.name}: ${failed.length} stage(s) did not hold, ${held} held.` : `${recipe.name}: every stage held (${held}).`);
  if (kept.length) out.say(`Kept for inspection (the sandbox stays up until: npm run sandbox -- down --dir ${sandboxDir}):\n  ${kept.join('\n  ')}`);
  emit({ event: 'test-finished', recipe: recipe.name, ok: failed.length === 0, held, failed: failed.length, ...(kept.length ? { sandbox: sandboxDir } : {}) });
  return failed.length ? 1 : 0;
}

function stageLine(r: StageResult): string {
  const mark = r.skipped ? '-' : r.ok ? '✓' : '✗';
  const name = r.step ? `${r.stage} after "${r.step}"` : r.stage;
  const body = r.skipped ? `not run: ${r.skipped}` : r.detail;
  const more = [...(r.residue ?? []).map((p) => `    left: ${p}`), ...(r.changed ?? []).map((s) => `    changed: ${s}`), ...(r.kept ? [`    host kept: ${r.kept}`] : [])];
  return [`${mark} ${name}: ${body}`, ...more].join('\n');
}

type SandboxT = Awaited<ReturnType<typeof import('../../sandbox/hosts.js').startSandbox>>;

/** What a job runs on: one sandbox host, or the hosts the user named. */
interface HostT {
  /** Names the job's state dir. */
  name: string;
  /** The target options that select it in a hostsmith run. */
  target: string[];
  /** Its names in the journal. */
  journalNames: string[];
  /** What residue is compared against: taken before a run. */
  snapshot(): Promise<unknown>;
  /** What differs from `before`, one line each. */
  leftOver(before: unknown): Promise<string[]>;
  /** Back to how it was before any job (a sandbox host wiped); false where that cannot be done. */
  fresh(): Promise<boolean>;
  /** How to reach it, for --keep. */
  sshHint?: string;
}

function sandboxHost(sb: SandboxT, h: SandboxT['hosts'][number], ignore: string[]): HostT {
  return {
    name: h.name,
    target: ['-i', sb.inventoryPath, '--known-hosts', sb.knownHostsPath, '--hosts', h.name],
    journalNames: [h.name],
    // The files, byte by byte from the overlay, and what is live: units or processes, and on a
    // network of its own the firewall and net.* sysctls.
    snapshot: async () => {
      const [{ snapshotHost }, { liveState }] = await Promise.all([import('../../sandbox/residue.js'), import('../../sandbox/live.js')]);
      return { files: await snapshotHost(sb, h), live: await liveState(sb, h) };
    },
    leftOver: async (before) => {
      const [{ residue }, { liveState, liveResidue }] = await Promise.all([import('../../sandbox/residue.js'), import('../../sandbox/live.js')]);
      const was = before as { files: Parameters<typeof residue>[2]; live: Awaited<ReturnType<typeof liveState>> };
      return [...(await residue(sb, h, was.files, { ignore })), ...liveResidue(was.live, await liveState(sb, h))];
    },
    fresh: async () => {
      await sb.restart(h, { wipe: true });
      return true;
    },
    sshHint: `ssh -i ${sb.keyPath} -o UserKnownHostsFile=${sb.knownHostsPath} -p ${h.port} root@${h.address}`,
  };
}

/**
 * Hosts the user named: nothing can be read from outside them, so residue is judged by reading
 * them through the recipe's own reads: a plan after the run must say, step by step and host by
 * host, what the plan before it said (unchanged, or the same kind of change).
 */
function namedHosts(env: JobEnv, target: string[], names: string[]): HostT {
  const self: HostT = {
    name: 'named',
    target,
    journalNames: names,
    snapshot: async () => planPicture(await hostsmith(env, self, ['plan'])),
    leftOver: async (before) => {
      const now = planPicture(await hostsmith(env, self, ['plan']));
      const was = before as Map<string, string>;
      const lines: string[] = [];
      for (const key of new Set([...was.keys(), ...now.keys()])) {
        if (was.get(key) !== now.get(key)) lines.push(`${key}: a plan said "${was.get(key) ?? 'nothing'}" before the run, "${now.get(key) ?? 'nothing'}" after it`);
      }
      return lines;
    },
    fresh: async () => false,
  };
  return self;
}

/** host/step → what a plan said of it (its status, and for a change its kind). */
function planPicture(plan: Child): Map<string, string> {
  const out = new Map<string, string>();
  for (const e of plan.events) {
    if (e.event !== 'step-finished') continue;
    out.set(`${String(e.host)} step "${String(e.step)}"`, e.status === 'planned' ? `${String(e.action ?? 'change')}` : String(e.status));
  }
  if (plan.code !== 0) out.set('the plan', `failed (${why(plan)})`);
  return out;
}

interface JobEnv {
  recipe: Recipe;
  file: string;
  o: TestCli;
  scratch: string;
  /** The hosts are the user's: not throwaway, so each job puts them back itself. */
  named: boolean;
}

type Job = (env: JobEnv, host: HostT) => Promise<StageResult[]>;

/** The jobs the wanted stages take: one host each, side by side. */
function planJobs(wanted: Set<Stage>, steps: string[]): Job[] {
  const jobs: Job[] = [];
  // The converge job ends with the undo stage (of the converge run, on the same host), which on
  // named hosts also puts them back.
  const mainJob = wanted.has('converge') || wanted.has('verify') || wanted.has('idempotence') || wanted.has('undo');
  if (mainJob) jobs.push((env, host) => convergeJob(env, host, wanted));
  if (wanted.has('plan')) jobs.push(planJob);
  if (wanted.has('rollback')) for (const step of steps) jobs.push((env, host) => rollbackJob(env, host, step));
  if (wanted.has('recover')) jobs.push(recoverJob);
  return jobs;
}

/** Runs this CLI against the job's host (or named hosts), with a journal of the job's own; its JSON events back. */
async function hostsmith(env: JobEnv, host: HostT, args: string[], o: { faultEnv?: Record<string, string>; killAfter?: (e: Record<string, unknown>) => number | undefined } = {}): Promise<Child> {
  const stateDir = join(env.scratch, host.name);
  const target = host.target;
  const vars = [...(env.o.varsFile ? ['--vars-file', resolve(env.o.varsFile)] : []), ...(env.o.var ?? []).flatMap((v) => ['--var', v])];
  const runs = args[0] === 'plan' || args[0] === 'apply';
  // A saved plan names its recipe and targets itself; its secrets must be given again.
  // undo and recover need the secrets again too (the journal masks them).
  const takesVars = runs || args[0] === 'undo' || args[0] === 'recover';
  const recipe = !takesVars ? [] : !runs || args.includes('--plan') ? vars : [env.file, ...target, ...vars];
  const full = ['--json', '--state-dir', stateDir, ...args, ...recipe];
  const child = spawn(process.execPath, [process.argv[1]!, ...full], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...o.faultEnv } });
  const events: Array<Record<string, unknown>> = [];
  let stderr = '';
  let rest = '';
  let timer: NodeJS.Timeout | undefined;
  child.stdout.on('data', (d: Buffer) => {
    rest += d.toString('utf8');
    let nl: number;
    while ((nl = rest.indexOf('\n')) >= 0) {
      const line = rest.slice(0, nl);
      rest = rest.slice(nl + 1);
      try {
        const e = JSON.parse(line) as Record<string, unknown>;
        events.push(e);
        const ms = timer ? undefined : o.killAfter?.(e);
        if (ms !== undefined) timer = setTimeout(() => child.kill('SIGKILL'), ms);
      } catch {
        // Not an event: the CLI writes only events on stdout with --json, so this is not expected.
      }
    }
  });
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString('utf8');
  });
  const code = await new Promise<number>((res) => child.on('close', (c, sig) => res(c ?? (sig ? 128 + 9 : 1))));
  clearTimeout(timer);
  return { code, events, stderr };
}

const applyArgs = ['apply', '--yes'];

function runIdOf(c: Child): string | undefined {
  const e = c.events.find((x) => x.event === 'run-started');
  return typeof e?.runId === 'string' ? e.runId : undefined;
}

function stepsWith(c: Child, status: string): string[] {
  return c.events.filter((e) => e.event === 'step-finished' && e.status === status && !e.handler).map((e) => String(e.step));
}

/** What went wrong, in the run's own words: the host's error, else the CLI's last lines. */
function why(c: Child): string {
  const host = c.events.find((e) => e.event === 'host-finished');
  const err = typeof host?.error === 'string' ? host.error : c.stderr.trim().split('\n').slice(-3).join(' ');
  return `exit ${c.code}${err ? `: ${err}` : ''}`;
}

async function convergeJob(env: JobEnv, host: HostT, wanted: Set<Stage>): Promise<StageResult[]> {
  const { recipe, named: onNamed } = env;
  const out: StageResult[] = [];
  const t0 = Date.now();
  const before = onNamed || wanted.has('undo') ? await host.snapshot() : undefined;
  const verify = wanted.has('verify') && recipe.verify.length > 0;
  // Lockout protection runs the verify commands over a new login after the steps.
  const first = await hostsmith(env, host, [...applyArgs, ...(verify ? ['--confirm', '120s'] : [])]);
  const failedSteps = stepsWith(first, 'failed');
  const verifyFailed = verify && first.code !== 0 && !failedSteps.length && /verify|confirm|login/i.test(why(first));
  const converged = first.code === 0 || verifyFailed;
  const changed = stepsWith(first, 'changed');
  out.push({
    stage: 'converge',
    ok: converged,
    detail: converged
      ? `applied${env.named ? '' : ' on a fresh host'}: ${changed.length} changed, ${stepsWith(first, 'unchanged').length} unchanged${
          onNamed && !changed.length ? ' (the hosts were already as the recipe says, so the rollback, undo and recover stages have nothing to take back: try hosts the recipe has not run on)' : ''
        }`
      : `apply failed${failedSteps.length ? ` at step "${failedSteps[0]}"` : ''} (${why(first)})`,
    durationMs: Date.now() - t0,
  });
  if (wanted.has('verify')) {
    if (!recipe.verify.length) out.push({ stage: 'verify', ok: true, skipped: 'the recipe has no verify: commands', detail: '', durationMs: 0 });
    else if (!converged) out.push({ stage: 'verify', ok: false, skipped: 'converge did not hold', detail: '', durationMs: 0 });
    else
      out.push({
        stage: 'verify',
        ok: !verifyFailed,
        detail: verifyFailed ? `the verify commands did not hold, and the run was rolled back (${why(first)})` : `${recipe.verify.length} verify command(s) held over a new login`,
        durationMs: 0,
      });
  }
  const usable = first.code === 0;
  let moved: string[] = [];
  if (wanted.has('idempotence')) {
    if (!usable) out.push({ stage: 'idempotence', ok: false, skipped: 'converge did not leave a converged host', detail: '', durationMs: 0 });
    else {
      const t = Date.now();
      const again = await hostsmith(env, host, applyArgs);
      moved = stepsWith(again, 'changed');
      const ok = again.code === 0 && !moved.length;
      out.push({
        stage: 'idempotence',
        ok,
        detail: ok ? 'a second apply changed nothing' : moved.length ? `a second apply changed ${moved.length} step(s): each should find its own work done` : `the second apply failed (${why(again)})`,
        ...(moved.length ? { changed: moved } : {}),
        durationMs: Date.now() - t,
      });
    }
  }
  const runId = runIdOf(first);
  if (!onNamed && wanted.has('undo') && (!usable || !runId || moved.length)) {
    // A converge that did not hold, or a second apply that changed something (undo would call
    // that drift): the undo stage gets a fresh host and an apply of its own.
    await host.fresh();
    out.push(...(await undoJob(env, host)));
  } else if ((onNamed || wanted.has('undo')) && usable && runId) {
    // Undo of the converge run is the undo stage (on the same host: the second apply changed
    // nothing), and on named hosts it puts them back for the next job.
    const result = await undoStage(env, host, runId, before, 'the converge run');
    // Not asked for, it still ran to put the hosts back: it is reported only when it did not.
    if (wanted.has('undo') || !result.ok) out.push(result);
  }
  return out;
}

/** Apply on a fresh host, then `undo` of that run: the host must be as before. */
const undoJob: Job = async (env, host) => {
  const t0 = Date.now();
  const before = await host.snapshot();
  const first = await hostsmith(env, host, applyArgs);
  const runId = runIdOf(first);
  if (first.code !== 0 || !runId) return [{ stage: 'undo', ok: false, skipped: `the apply before the undo failed (${why(first)})`, detail: '', durationMs: Date.now() - t0 }];
  return [await undoStage(env, host, runId, before, 'an apply')];
};

/** `undo` of a run, and what it left against `before`. */
async function undoStage(env: JobEnv, host: HostT, runId: string, before: unknown, what: string): Promise<StageResult> {
  const t0 = Date.now();
  const undo = await hostsmith(env, host, ['undo', runId, '--yes']);
  const left = await host.leftOver(before);
  const ok = undo.code === 0 && !left.length;
  return {
    stage: 'undo',
    ok,
    detail: ok
      ? `undo of ${what} left ${env.named ? 'the hosts as a plan saw them before it' : 'zero residue'}`
      : undo.code !== 0
        ? `undo failed (${why(undo)})`
        : `undo left ${leftWords(env, left.length)}`,
    ...(left.length ? { residue: left } : {}),
    durationMs: Date.now() - t0,
  };
}

const planJob: Job = async (env, host) => {
  const t0 = Date.now();
  const planFile = join(env.scratch, `${host.name}-plan.json`);
  const plan = await hostsmith(env, host, ['plan', '--out', planFile]);
  if (plan.code !== 0) return [{ stage: 'plan', ok: false, detail: `plan failed (${why(plan)})`, durationMs: Date.now() - t0 }];
  const said = stepsWith(plan, 'planned');
  // A step known only after apply (it reads what an earlier one changes) may find nothing to do at its turn.
  const dynamic = plan.events.filter((e) => e.event === 'step-finished' && e.dynamic === true).map((e) => String(e.step));
  const apply = await hostsmith(env, host, ['apply', '--yes', '--plan', planFile]);
  const did = stepsWith(apply, 'changed');
  const applied = runIdOf(apply);
  // A host that cannot be wiped is put back for the next job.
  if (env.named && applied && did.length) await hostsmith(env, host, ['undo', applied, '--yes']);
  const extra = did.filter((s) => !said.includes(s));
  const missing = said.filter((s) => !did.includes(s) && !dynamic.includes(s));
  const ok = apply.code === 0 && !extra.length && !missing.length;
  const detail = ok
    ? `a plan saved${env.named ? '' : ' on a fresh host'} applied exactly (${said.length} change(s))`
    : apply.code !== 0
      ? `the saved plan did not apply (${why(apply)})`
      : `the apply did not do what the plan said: ${[...extra.map((s) => `"${s}" changed but was not planned`), ...missing.map((s) => `"${s}" was planned but did not change`)].join('; ')}`;
  return [{ stage: 'plan', ok, detail, ...(extra.length ? { changed: extra } : {}), durationMs: Date.now() - t0 }];
};

async function rollbackJob(env: JobEnv, host: HostT, step: string): Promise<StageResult[]> {
  const t0 = Date.now();
  const before = await host.snapshot();
  const run = await hostsmith(env, host, applyArgs, { faultEnv: { HOSTSMITH_FAULT_FAIL_AFTER_STEP: step } });
  const left = await host.leftOver(before);
  const rolled = eventsOf(run, 'rollback-finished').length;
  const failedRollbacks = eventsOf(run, 'rollback-finished').filter((e) => e.status !== 'rolled-back');
  // Exit 1: a step failed and every completed step was rolled back.
  const ok = run.code === 1 && !failedRollbacks.length && !left.length;
  const detail = ok
    ? `${rolled} step(s) rolled back, ${clean(env)}`
    : run.code === 0
      ? 'the injected failure did not stop the run (exit 0)'
      : failedRollbacks.length
        ? `rollback of ${failedRollbacks.map((e) => `"${String(e.step)}"`).join(', ')} failed (${failedRollbacks.map((e) => String(e.error ?? '')).join('; ')})`
        : left.length
          ? `the rollback left ${leftWords(env, left.length)}`
          : `the run did not end rolled back (${why(run)})`;
  return [{ stage: 'rollback', step, ok, detail, ...(left.length ? { residue: left } : {}), durationMs: Date.now() - t0 }];
}

/** What "nothing left" means on these hosts: bytes on a sandbox host, the recipe's own reads on a named one. */
function clean(env: JobEnv): string {
  return env.named ? 'the hosts read as before the run' : 'zero residue';
}

/** What is left, counted: paths on a sandbox host, a plan's differences on named ones. */
function leftWords(env: JobEnv, n: number): string {
  return `${n} ${env.named ? 'difference(s) from the plan before the run' : 'path(s) that were not there before'}`;
}

function eventsOf(run: Child, event: string): Array<Record<string, unknown>> {
  return run.events.filter((e) => e.event === event);
}

/**
 * The controller is SIGKILLed at a random moment: first a step drawn at random, a random time (up
 * to 400 ms) after it started, so the kill can land in the middle of a change. A draw that lands
 * after the apply ended proves nothing: then, on a fresh host, the kill comes right after a journal
 * entry drawn at random (the controller kills itself there, as a crash would).
 */
const recoverJob: Job = async (env, host) => {
  const t0 = Date.now();
  const steps = env.recipe.steps.length;
  let before = await host.snapshot();
  let moment = '';
  let run: Child | undefined;
  for (let attempt = 1; attempt <= 3; attempt++) {
    if (attempt > 1) {
      // A named host cannot be wiped: the finished run is undone instead.
      const id = run ? runIdOf(run) : undefined;
      if (!(await host.fresh()) && id) await hostsmith(env, host, ['undo', id, '--yes']);
      before = await host.snapshot();
    }
    const forced = Number(process.env.HOSTSMITH_TEST_KILL_AT_WRITE);
    if (attempt === 1 && forced > 0) {
      // Fault injection for the tests of this command: the kill at a journal entry they choose.
      moment = `killed right after its journal entry ${forced}`;
      run = await hostsmith(env, host, applyArgs, { faultEnv: { HOSTSMITH_FAULT_KILL_AT_WRITE: String(forced) } });
    } else if (attempt === 1) {
      const nth = 1 + Math.floor(Math.random() * steps);
      const delay = Math.floor(Math.random() * 400);
      let seen = 0;
      run = await hostsmith(env, host, applyArgs, {
        killAfter: (e) => {
          if (e.event !== 'step-started' || ++seen !== nth) return undefined;
          moment = `killed ${delay} ms after step "${String(e.step)}" (${nth} of ${steps}) started`;
          return delay;
        },
      });
    } else {
      // host-started, then step-started and step-finished for each change: 1 + 2 per step at most.
      const n = attempt === 2 ? 1 + Math.ceil(Math.random() * 2 * steps) : 2;
      moment = `killed right after its journal entry ${n}`;
      run = await hostsmith(env, host, applyArgs, { faultEnv: { HOSTSMITH_FAULT_KILL_AT_WRITE: String(n) } });
    }
    if (!ended(env, host, run)) break;
  }
  if (!run) throw new Error('unreachable');
  const runId = runIdOf(run);
  if (ended(env, host, run)) {
    // Three draws in a row landed after the apply ended: nothing was proved.
    return [{ stage: 'recover', ok: false, detail: `the apply ended before the kill (${moment}): run the stage again (--only recover)`, durationMs: Date.now() - t0 }];
  }
  if (!runId) return [{ stage: 'recover', ok: false, detail: `the apply was killed before it started a run (${why(run)})`, durationMs: Date.now() - t0 }];
  const rec = await hostsmith(env, host, ['recover', runId, '--yes']);
  const at = moment || 'killed';
  if (rec.code > 1) return [{ stage: 'recover', ok: false, detail: `${at}; recover failed (${why(rec)})`, durationMs: Date.now() - t0 }];
  if (finishedOk(env, host, runId)) {
    // The kill came after the run had finished on the host (journaled ok): recover leaves its work
    // as it is, so the host must be converged — a plan finds nothing to change.
    const plan = await hostsmith(env, host, ['plan', '--detailed-exitcode']);
    const moved = stepsWith(plan, 'planned');
    const ok = plan.code === 0;
    if (env.named) await hostsmith(env, host, ['undo', runId, '--yes']);
    return [
      {
        stage: 'recover',
        ok,
        detail: ok
          ? `${at}, after the run had finished on the host; recover left its work whole (a plan finds nothing to change)`
          : `${at}, after the run had finished on the host; recover should have left its work whole, but ${moved.length ? 'a plan finds steps to change' : `the plan failed (${why(plan)})`}`,
        ...(moved.length ? { changed: moved } : {}),
        durationMs: Date.now() - t0,
      },
    ];
  }
  const left = await host.leftOver(before);
  const ok = !left.length;
  return [
    {
      stage: 'recover',
      ok,
      detail: ok ? `${at}; recover left ${clean(env)}` : `${at}; recover left ${leftWords(env, left.length)}`,
      ...(left.length ? { residue: left } : {}),
      durationMs: Date.now() - t0,
    },
  ];
};

/** The apply ended before the kill: it exited by itself, or its journal closed the run (the kill came after). */
function ended(env: JobEnv, host: HostT, run: Child): boolean {
  if (run.code === 0) return true;
  const id = runIdOf(run);
  return id !== undefined && journalKinds(env, host, id).some((e) => e.kind === 'run-finished');
}

function journalKinds(env: JobEnv, host: HostT, runId: string): Array<{ kind?: string; host?: string; status?: string }> {
  let text: string;
  try {
    text = readFileSync(journalFile(join(env.scratch, host.name), runId), 'utf8');
  } catch {
    return [];
  }
  const out: Array<{ kind?: string; host?: string; status?: string }> = [];
  for (const line of text.split('\n')) {
    try {
      out.push(JSON.parse(line) as { kind?: string; host?: string; status?: string });
    } catch {
      // A torn last line (the kill): not an entry.
    }
  }
  return out;
}

/** Whether the run's journal (in the job's own state dir) says the run had finished, ok, on every host of the job. */
function finishedOk(env: JobEnv, host: HostT, runId: string): boolean {
  const done = new Set(journalKinds(env, host, runId).flatMap((e) => (e.kind === 'host-finished' && e.status === 'ok' && e.host ? [e.host] : [])));
  return host.journalNames.every((n) => done.has(n));
}
