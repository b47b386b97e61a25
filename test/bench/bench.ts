/**
 * `npm run bench -- [bench|webapp|path/to/recipe.yml] [--vars-file f.yml] [--floor script.sh]`
 * hostsmith against sandbox hosts at 1, 10 and 50 hosts in one run, beside two floors measured in
 * the same run on the same hosts:
 *
 * - first run: hostsmith applies the recipe to fresh hosts; the floor is the same changes as one
 *   plain shell script per host over one OpenSSH `ssh`, no checks, all hosts at once. Both run on
 *   the same hosts, each right after a wipe (a fresh host).
 * - no-op rerun: hostsmith applies the recipe again (nothing to change); the floor is
 *   `ssh host true` for all hosts at once, on the same hosts, right before it.
 *
 * The recipe: `bench` (default), 30 steps of every step type; `webapp`, 30 steps a web app's host
 * gets (nginx-light and more); both built-ins carry their first-run floor. Any other recipe file
 * has no first-run floor unless `--floor script.sh` gives one (that script over one ssh per host);
 * its first run must change at least one step. BENCH_RECIPE chooses the recipe when no argument does.
 *
 * hostsmith runs as the real CLI (`node bin/hostsmith.js apply --yes --json --concurrency N`)
 * under /usr/bin/time: wall time, controller CPU (user + sys) and peak RSS; HOSTSMITH_COUNT_EXECS=1
 * gives each host's exec channels (round trips). Each measurement is repeated BENCH_REPEAT times
 * (default 3); the median counts. Timings are targets of this benchmark, never of a test.
 *
 * Env: BENCH_HOSTS=1,10,50 (also 100) · BENCH_REPEAT=3 · BENCH_OUT=file.json · BENCH_RECIPE=webapp
 *      BENCH_CLI=path/to/bin/hostsmith.js (default: this checkout's, built first unless BENCH_BUILD=0)
 * Exit: 0 every target met · 1 a target missed (named) · 2 the bench could not measure.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Sandbox } from '../hosts/hosts.js';
import { ensureRootfs } from '../hosts/rootfs.js';
import { sshArgs } from '../hosts/ssh.js';
import { startPool, type BenchHost, type Pool } from './pool.js';
import { childCpuSeconds, hostCpuSeconds, killChildren, machineCpuSeconds, runChild, timedChild } from './proc.js';
import { bench, type BuiltInRecipe } from './recipe.js';
import { webapp } from './webapp.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const COUNTS = (process.env.BENCH_HOSTS ?? '1,10,50').split(',').map((s) => Number(s.trim()));
const REPEAT = Number(process.env.BENCH_REPEAT ?? 3);
const CLI = resolve(process.env.BENCH_CLI ?? join(ROOT, 'bin/hostsmith.js'));
const BUILD = !process.env.BENCH_CLI && process.env.BENCH_BUILD !== '0';
const BUILT_IN: Record<string, BuiltInRecipe> = { [bench.name]: bench, [webapp.name]: webapp };

const USAGE = `usage: npm run bench -- [${Object.keys(BUILT_IN).join('|')}|path/to/recipe.yml] [--vars-file vars.yml] [--floor script.sh]
  ${Object.values(BUILT_IN)
    .map((r) => `${r.name.padEnd(8)} ${r.description}`)
    .join('\n  ')}
  a path   any recipe: first run and no-op rerun; no first-run floor unless --floor gives one
           (a shell script run with sh -s over one ssh per host, making the recipe's changes)
env: BENCH_RECIPE (the recipe when no argument names one), BENCH_HOSTS, BENCH_REPEAT, BENCH_OUT, BENCH_CLI, BENCH_BUILD`;

/** What is measured: a built-in recipe (with its floor) or a recipe file (with a floor if given). */
interface Subject {
  /** The built-in's name, or the path as given. */
  name: string;
  builtIn: BuiltInRecipe | null;
  /** The recipe file of a path (a built-in's is written into the work folder). */
  file?: string;
  varsFile?: string;
  /** The first-run floor script, or null: no first-run floor (and no floor check). */
  floor: string | null;
  /** Where the floor came from. */
  floorFrom: string | null;
}

class UsageError extends Error {}

function parseSubject(argv: string[]): Subject {
  let what: string | undefined;
  let varsFile: string | undefined;
  let floorFile: string | undefined;
  // npm runs scripts in the package's folder: a relative path is the caller's, from where npm was started.
  const here = (p: string) => resolve(process.env.INIT_CWD ?? process.cwd(), p);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${a} needs a file`);
      return v;
    };
    if (a === '--vars-file') varsFile = here(value());
    else if (a === '--floor') floorFile = here(value());
    else if (a === '-h' || a === '--help') throw new UsageError('');
    else if (a.startsWith('-')) throw new UsageError(`unknown option ${a}`);
    else if (what !== undefined) throw new UsageError(`one recipe at a time (got ${what} and ${a})`);
    else what = a;
  }
  what ??= process.env.BENCH_RECIPE || bench.name;
  const builtIn = BUILT_IN[what];
  if (builtIn) {
    // A built-in's floor is its own changes with its own vars: another floor or vars would not match it.
    if (floorFile || varsFile) throw new UsageError(`${what} is a built-in recipe with its own floor and vars: --floor and --vars-file are for a recipe file`);
    return { name: what, builtIn, floor: builtIn.floorScript(), floorFrom: `built-in (${what})` };
  }
  const file = here(what);
  if (!existsSync(file)) throw new UsageError(`${what}: no such recipe file, and not a built-in (${Object.keys(BUILT_IN).join(', ')})`);
  for (const f of [varsFile, floorFile]) if (f && !existsSync(f)) throw new UsageError(`${f}: no such file`);
  return { name: what, builtIn: null, file, varsFile, floor: floorFile ? readFileSync(floorFile, 'utf8') : null, floorFrom: floorFile ?? null };
}

/** The issue's targets. `at`: the host counts a target is stated for. */
const TARGETS = {
  noopRatio: { 1: 3, 10: 1.5, 50: 1.5 } as Record<number, number>,
  firstRatio: { 10: 1.3, 50: 1.3 } as Record<number, number>,
  /** Controller memory per host above the 1-host run (Node's own is that run's peak, reported beside it). */
  rssMiBPerHost: { 50: 3, 100: 3 } as Record<number, number>,
  /** A no-op's CPU on the host, against `ssh host true` on the same host. */
  noopHostCpuRatio: 2,
  /** `hostsmith --version` against `node -e 0` (start-up, wall time). */
  versionVsNode: 1.5,
  scale100vs50: 2,
  noopExecsPerHost: 2,
};

// ---------------------------------------------------------------- samples

/** CPU seconds spent on the hosts' side (all hosts: sshd sessions and what they ran) and by the whole machine. */
interface SideCpu {
  hostCpuS: number;
  machineCpuS: number;
}

interface FloorSample extends SideCpu {
  wallS: number;
  /** CPU seconds of the ssh clients (this machine's side). */
  clientCpuS: number;
}

interface HostsmithSample extends SideCpu {
  wallS: number;
  userS: number;
  sysS: number;
  cpuS: number;
  maxRssKiB: number;
  /** Exec channels per host (HOSTSMITH_COUNT_EXECS). */
  execs: Record<string, number>;
  changed: number;
  unchanged: number;
  /** Steps the first host ran (changed, unchanged or skipped). */
  stepsPerHost: number;
  loadBefore: number;
}

interface CountResult {
  hosts: number;
  /** Empty when the recipe has no first-run floor. */
  floorFirst: FloorSample[];
  hostsmithFirst: HostsmithSample[];
  floorNoop: FloorSample[];
  hostsmithNoop: HostsmithSample[];
  /** `hostsmith plan` on hosts the floor script set up: steps it would still change (should be none). */
  floorCheck?: { changedSteps: string[] };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

const say = (msg: string): void => void process.stderr.write(`[bench] ${msg}\n`);

// ---------------------------------------------------------------- one measurement each

class BenchError extends Error {}

/** sshd reaps a finished session a moment after the client saw it end: wait (untimed) before reading the hosts' CPU. */
const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 500));
const hostsCpu = (hosts: BenchHost[]): number => hosts.reduce((a, h) => a + hostCpuSeconds(h.host.pid), 0);

async function floor(pool: Pool, hosts: BenchHost[], cmd: string, input: string): Promise<FloorSample> {
  const side0 = { host: hostsCpu(hosts), machine: machineCpuSeconds() };
  const cpu0 = childCpuSeconds();
  const t0 = performance.now();
  const results = await Promise.all(hosts.map((h) => runChild('/usr/bin/ssh', [...sshArgs(pool.target(h), 'root'), '--', cmd], { input })));
  const wallS = (performance.now() - t0) / 1000;
  const clientCpuS = childCpuSeconds() - cpu0;
  await settle();
  const hostCpuS = hostsCpu(hosts) - side0.host;
  const machineCpuS = machineCpuSeconds() - side0.machine;
  results.forEach((r, i) => {
    if (r.code !== 0) throw new BenchError(`floor \`${cmd}\` failed on ${hosts[i]!.name} (exit ${r.code}): ${r.stderr.trim()}`);
  });
  return { wallS, clientCpuS, hostCpuS, machineCpuS };
}

interface Cli {
  work: string;
  recipe: string;
  varsFile?: string;
  /** Steps a first run must change on each host: all of a built-in's; null: at least one (a recipe file). */
  firstChanges: number | null;
  inventory: string;
  knownHosts: string;
}

function cliArgs(c: Cli, mode: 'apply' | 'plan', stateDir: string, n: number): string[] {
  return [
    CLI,
    mode,
    c.recipe,
    '-i',
    c.inventory,
    '--known-hosts',
    c.knownHosts,
    '--state-dir',
    stateDir,
    '--concurrency',
    String(n),
    '--json',
    ...(c.varsFile ? ['--vars-file', c.varsFile] : []),
    ...(mode === 'apply' ? ['--yes'] : []),
  ];
}

const cliEnv = (): NodeJS.ProcessEnv => ({ ...process.env, NO_COLOR: '1', HOSTSMITH_COUNT_EXECS: '1' });

type Json = Record<string, any>;
const events = (stdout: string): Json[] =>
  stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Json);

async function hostsmith(c: Cli, stateDir: string, hosts: BenchHost[], expect: 'first' | 'noop'): Promise<HostsmithSample> {
  const loadBefore = loadavg()[0]!;
  const side0 = { host: hostsCpu(hosts), machine: machineCpuSeconds() };
  const t = await timedChild(join(c.work, 'time.txt'), process.execPath, cliArgs(c, 'apply', stateDir, hosts.length), { env: cliEnv(), cwd: c.work });
  const r = t.result;
  await settle();
  const hostCpuS = hostsCpu(hosts) - side0.host;
  const machineCpuS = machineCpuSeconds() - side0.machine;
  const evs = events(r.stdout);
  const fin = evs.find((e) => e.event === 'run-finished');
  if (r.code !== 0 || !fin)
    throw new BenchError(`hostsmith ${expect === 'first' ? 'first run' : 'rerun'} on ${hosts.length} host(s) exited ${r.code}:\n${r.stderr.slice(-3000)}\n${r.stdout.slice(-2000)}`);
  const execs: Record<string, number> = {};
  // The transport prints its count at every close() call, and a host's transport may be closed twice: the last line counts.
  for (const m of r.stderr.matchAll(/^hostsmith: (\S+): (\d+) exec channel\(s\)$/gm)) execs[m[1]!] = Math.max(execs[m[1]!] ?? 0, Number(m[2]));
  let changed = 0;
  let unchanged = 0;
  for (const h of hosts) {
    const counts = fin.hosts?.[h.name] as Json | undefined;
    if (counts?.status !== 'ok') throw new BenchError(`hostsmith: ${h.name} ended ${counts?.status ?? 'missing'}`);
    if (execs[h.name] === undefined) throw new BenchError(`hostsmith: no exec count for ${h.name} (HOSTSMITH_COUNT_EXECS output missing)`);
    changed += counts.changed as number;
    unchanged += counts.unchanged as number;
    if (expect === 'first' && c.firstChanges !== null && counts.changed !== c.firstChanges)
      throw new BenchError(`first run on ${h.name} changed ${counts.changed} of ${c.firstChanges} steps: not a first run`);
    if (expect === 'first' && c.firstChanges === null && !(counts.changed >= 1))
      throw new BenchError(`first run on ${h.name} changed nothing: the hosts were not fresh, or the recipe makes no change here`);
    if (expect === 'noop' && counts.changed !== 0) {
      const which = evs.filter((e) => e.event === 'step-finished' && e.host === h.name && e.status === 'changed').map((e) => `${e.step}: ${e.summary}`);
      throw new BenchError(`rerun on ${h.name} changed ${counts.changed} step(s), not a no-op: ${which.join('; ')}`);
    }
  }
  const first = fin.hosts?.[hosts[0]!.name] as Json;
  const stepsPerHost = (first.changed as number) + (first.unchanged as number) + ((first.skipped as number) ?? 0);
  return { wallS: t.wallS, userS: t.userS, sysS: t.sysS, cpuS: t.userS + t.sysS, maxRssKiB: t.maxRssKiB, execs, changed, unchanged, stepsPerHost, loadBefore, hostCpuS, machineCpuS };
}

/** What `hostsmith plan` would still change on hosts the floor script set up (untimed). */
async function checkFloor(c: Cli, hosts: BenchHost[]): Promise<string[]> {
  const state = mkdtempSync(join(c.work, 'state-check-'));
  const r = await runChild(process.execPath, cliArgs(c, 'plan', state, hosts.length), { env: { ...process.env, NO_COLOR: '1' }, cwd: c.work });
  const evs = events(r.stdout);
  if (!evs.some((e) => e.event === 'run-finished')) throw new BenchError(`hostsmith plan (floor check) failed, exit ${r.code}:\n${r.stderr.slice(-3000)}`);
  // Skipped (an `unless:` that succeeds) is nothing to change, as unchanged is.
  return [...new Set(evs.filter((e) => e.event === 'step-finished' && e.status !== 'unchanged' && e.status !== 'skipped').map((e) => `${e.step} (${e.status}: ${e.summary})`))];
}

// ---------------------------------------------------------------- one host count

async function measureCount(pool: Pool, c0: Omit<Cli, 'inventory'>, script: string | null, n: number): Promise<CountResult> {
  const hosts = pool.hosts.slice(0, n);
  const c: Cli = { ...c0, inventory: join(c0.work, `inventory-${n}.yml`) };
  pool.inventory(hosts, c.inventory);
  const res: CountResult = { hosts: n, floorFirst: [], hostsmithFirst: [], floorNoop: [], hostsmithNoop: [] };
  for (let r = 0; r < REPEAT; r++) {
    const tag = `${n} host(s), run ${r + 1}/${REPEAT}`;
    if (script !== null) {
      await pool.wipe(hosts);
      const ff = await floor(pool, hosts, 'sh -s', script);
      res.floorFirst.push(ff);
      say(`${tag}: first-run floor ${ff.wallS.toFixed(2)} s`);
      if (r === 0) {
        const left = await checkFloor(c, hosts);
        res.floorCheck = { changedSteps: left };
        if (left.length) say(`WARNING: after the floor script, hostsmith plan still changes: ${left.join('; ')}`);
      }
    }
    await pool.wipe(hosts);
    const state = mkdtempSync(join(c.work, `state-${n}-`));
    const hf = await hostsmith(c, state, hosts, 'first');
    res.hostsmithFirst.push(hf);
    say(`${tag}: hostsmith first run ${hf.wallS.toFixed(2)} s, ${(hf.cpuS).toFixed(2)} CPU s, ${(hf.maxRssKiB / 1024).toFixed(0)} MiB`);
    const fn = await floor(pool, hosts, 'true', '');
    res.floorNoop.push(fn);
    const hn = await hostsmith(c, state, hosts, 'noop');
    res.hostsmithNoop.push(hn);
    say(`${tag}: no-op floor ${fn.wallS.toFixed(2)} s, hostsmith rerun ${hn.wallS.toFixed(2)} s`);
    rmSync(state, { recursive: true, force: true });
  }
  return res;
}

// ---------------------------------------------------------------- report

interface Row {
  hosts: number | string;
  what: string;
  hostsmith: string;
  floor: string;
  ratio: string;
  target: string;
  verdict: 'met' | 'MISSED' | '';
}

interface Check {
  name: string;
  value: number;
  target: number;
  met: boolean;
}

/** Start-up: wall time of a bare Node, of `hostsmith --version` and of `hostsmith validate <recipe>`, medians of 9 (no hosts). */
interface Startup {
  nodeS: number;
  versionS: number;
  validateS: number;
}
let startup: Startup | undefined;

async function measureStartup(recipe: string): Promise<Startup> {
  const wall = async (args: string[]) => {
    const xs: number[] = [];
    for (let i = 0; i < 9; i++) {
      const t0 = performance.now();
      const r = await runChild(process.execPath, args, { cwd: ROOT });
      if (r.code !== 0) throw new BenchError(`start-up: node ${args.join(' ')} exited ${r.code}: ${r.stderr.slice(-500)}`);
      xs.push((performance.now() - t0) / 1000);
    }
    return median(xs);
  };
  return { nodeS: await wall(['-e', '0']), versionS: await wall([CLI, '--version']), validateS: await wall([CLI, 'validate', recipe]) };
}

function summarize(results: CountResult[]): { rows: Row[]; checks: Check[]; perCount: Json[] } {
  const rows: Row[] = [];
  const checks: Check[] = [];
  const perCount: Json[] = [];
  const s = (x: number) => `${x.toFixed(2)} s`;
  const s3 = (x: number) => `${x.toFixed(3)} s`;
  /** A median of the floor's samples; NaN when the recipe has no first-run floor (shown as —, left out of checks). */
  const fmed = (xs: number[]) => (xs.length ? median(xs) : Number.NaN);
  const show = (x: number, f: (x: number) => string) => (Number.isNaN(x) ? '—' : f(x));
  const times = (a: number, b: number) => (Number.isFinite(a / b) ? `${(a / b).toFixed(2)}×` : '—');
  const num = (x: number) => (Number.isFinite(x) ? x : null);
  const check = (name: string, value: number, target: number | undefined): Pick<Row, 'target' | 'verdict'> => {
    if (target === undefined) return { target: '—', verdict: '' };
    if (Number.isNaN(value)) return { target: `≤ ${target}`, verdict: '' };
    const met = value <= target;
    checks.push({ name, value, target, met });
    return { target: `≤ ${target}`, verdict: met ? 'met' : 'MISSED' };
  };
  for (const r of results) {
    const n = r.hosts;
    const ff = fmed(r.floorFirst.map((x) => x.wallS));
    const hf = median(r.hostsmithFirst.map((x) => x.wallS));
    const fn = median(r.floorNoop.map((x) => x.wallS));
    const hn = median(r.hostsmithNoop.map((x) => x.wallS));
    const execsPerHost = (xs: HostsmithSample[]) => median(xs.map((x) => Object.values(x.execs).reduce((a, b) => a + b, 0) / n));
    const firstExecs = execsPerHost(r.hostsmithFirst);
    const noopExecs = execsPerHost(r.hostsmithNoop);
    const rssFirst = median(r.hostsmithFirst.map((x) => x.maxRssKiB)) / 1024;
    const rssNoop = median(r.hostsmithNoop.map((x) => x.maxRssKiB)) / 1024;
    const peakMiB = Math.max(rssFirst, rssNoop);
    const cpuFirst = median(r.hostsmithFirst.map((x) => x.cpuS));
    const cpuNoop = median(r.hostsmithNoop.map((x) => x.cpuS));
    const floorCpuFirst = fmed(r.floorFirst.map((x) => x.clientCpuS));
    const floorCpuNoop = median(r.floorNoop.map((x) => x.clientCpuS));
    rows.push({ hosts: n, what: 'first run', hostsmith: s(hf), floor: show(ff, s), ratio: times(hf, ff), ...check(`first run ratio at ${n} hosts`, hf / ff, TARGETS.firstRatio[n]) });
    rows.push({ hosts: n, what: 'no-op rerun', hostsmith: s(hn), floor: s(fn), ratio: `${(hn / fn).toFixed(2)}×`, ...check(`no-op ratio at ${n} hosts`, hn / fn, TARGETS.noopRatio[n]) });
    rows.push({ hosts: n, what: 'execs/host, first run', hostsmith: firstExecs.toFixed(1), floor: r.floorFirst.length ? '1' : '—', ratio: '', target: '—', verdict: '' });
    rows.push({ hosts: n, what: 'execs/host, no-op', hostsmith: noopExecs.toFixed(1), floor: '1', ratio: '', ...check(`no-op execs per host at ${n} hosts`, noopExecs, TARGETS.noopExecsPerHost) });
    rows.push({ hosts: n, what: 'controller CPU, first run', hostsmith: s(cpuFirst), floor: show(floorCpuFirst, s), ratio: times(cpuFirst, floorCpuFirst), target: '—', verdict: '' });
    rows.push({ hosts: n, what: 'controller CPU, no-op', hostsmith: s(cpuNoop), floor: s(floorCpuNoop), ratio: `${(cpuNoop / floorCpuNoop).toFixed(2)}×`, target: '—', verdict: '' });
    const hostCpu = (xs: Array<{ hostCpuS: number }>) => fmed(xs.map((x) => x.hostCpuS));
    const hostFirst = hostCpu(r.hostsmithFirst);
    const floorHostFirst = hostCpu(r.floorFirst);
    const hostNoop = hostCpu(r.hostsmithNoop);
    const floorHostNoop = hostCpu(r.floorNoop);
    rows.push({ hosts: n, what: 'host-side CPU, first run', hostsmith: s(hostFirst), floor: show(floorHostFirst, s), ratio: times(hostFirst, floorHostFirst), target: '—', verdict: '' });
    rows.push({ hosts: n, what: 'host-side CPU, no-op', hostsmith: s(hostNoop), floor: s(floorHostNoop), ratio: times(hostNoop, floorHostNoop), target: '—', verdict: '' });
    // The same per host: what one managed host pays, to compare across host counts and recipes.
    rows.push({ hosts: n, what: 'host CPU/host, first run', hostsmith: s3(hostFirst / n), floor: show(floorHostFirst / n, s3), ratio: times(hostFirst, floorHostFirst), target: '—', verdict: '' });
    rows.push({
      hosts: n,
      what: 'host CPU/host, no-op',
      hostsmith: s3(hostNoop / n),
      floor: s3(floorHostNoop / n),
      ratio: times(hostNoop, floorHostNoop),
      ...check(`no-op host CPU against ssh true at ${n} hosts`, hostNoop / floorHostNoop, TARGETS.noopHostCpuRatio),
    });
    rows.push({
      hosts: n,
      what: 'peak RSS / host',
      hostsmith: `${(peakMiB / n).toFixed(2)} MiB`,
      floor: `(${peakMiB.toFixed(0)} MiB total)`,
      ratio: '',
      target: '—',
      verdict: '',
    });
    perCount.push({
      hosts: n,
      median: {
        floorFirstS: num(ff),
        hostsmithFirstS: hf,
        firstRatio: num(hf / ff),
        floorNoopS: fn,
        hostsmithNoopS: hn,
        noopRatio: hn / fn,
        execsPerHostFirst: firstExecs,
        execsPerHostNoop: noopExecs,
        cpuFirstS: cpuFirst,
        cpuNoopS: cpuNoop,
        floorClientCpuFirstS: num(floorCpuFirst),
        floorClientCpuNoopS: floorCpuNoop,
        peakRssMiB: peakMiB,
        peakRssMiBPerHost: peakMiB / n,
        peakRssFirstMiB: rssFirst,
        peakRssNoopMiB: rssNoop,
        hostCpuFirstS: hostFirst,
        floorHostCpuFirstS: num(floorHostFirst),
        hostCpuNoopS: hostNoop,
        floorHostCpuNoopS: floorHostNoop,
        hostCpuPerHostFirstS: hostFirst / n,
        floorHostCpuPerHostFirstS: num(floorHostFirst / n),
        hostCpuPerHostFirstRatio: num(hostFirst / floorHostFirst),
        hostCpuPerHostNoopS: hostNoop / n,
        floorHostCpuPerHostNoopS: floorHostNoop / n,
        hostCpuPerHostNoopRatio: num(hostNoop / floorHostNoop),
        machineCpuFirstS: median(r.hostsmithFirst.map((x) => x.machineCpuS)),
        floorMachineCpuFirstS: num(fmed(r.floorFirst.map((x) => x.machineCpuS))),
      },
    });
  }
  if (startup) {
    const { nodeS, versionS, validateS } = startup;
    rows.push({
      hosts: '—',
      what: 'start-up: --version',
      hostsmith: `${versionS.toFixed(3)} s`,
      floor: `${nodeS.toFixed(3)} s`,
      ratio: `${(versionS / nodeS).toFixed(2)}×`,
      ...check('hostsmith --version against node -e 0', versionS / nodeS, TARGETS.versionVsNode),
    });
    rows.push({
      hosts: '—',
      what: 'start-up: validate',
      hostsmith: `${validateS.toFixed(3)} s`,
      floor: `${nodeS.toFixed(3)} s`,
      ratio: `${(validateS / nodeS).toFixed(2)}×`,
      target: '—',
      verdict: '',
    });
  }
  const at = (n: number) => results.find((r) => r.hosts === n);
  const r50 = at(50);
  const r100 = at(100);
  if (r50 && r100) {
    for (const [what, key] of [
      ['first run', 'hostsmithFirst'],
      ['no-op rerun', 'hostsmithNoop'],
    ] as const) {
      const x = median(r100[key].map((s) => s.wallS)) / median(r50[key].map((s) => s.wallS));
      rows.push({ hosts: '100 vs 50', what: `${what} time`, hostsmith: `${x.toFixed(2)}×`, floor: '', ratio: '', ...check(`${what}: 100 hosts vs 50`, x, TARGETS.scale100vs50) });
    }
  }
  // Memory per host: the peak above the 1-host run's (which is Node's own, the CLI and one host), per extra host.
  const r1 = at(1);
  if (r1) {
    const base = Math.max(median(r1.hostsmithFirst.map((x) => x.maxRssKiB)), median(r1.hostsmithNoop.map((x) => x.maxRssKiB))) / 1024;
    for (const p of perCount) {
      if (p.hosts <= 1) continue;
      p.median.marginalRssMiBPerHost = (p.median.peakRssMiB - base) / (p.hosts - 1);
      rows.push({
        hosts: p.hosts,
        what: 'memory / extra host',
        hostsmith: `${p.median.marginalRssMiBPerHost.toFixed(2)} MiB`,
        floor: `(1 host: ${base.toFixed(0)} MiB)`,
        ratio: '',
        ...check(`controller MiB per extra host at ${p.hosts} hosts`, p.median.marginalRssMiBPerHost, TARGETS.rssMiBPerHost[p.hosts]),
      });
    }
  } else {
    for (const n of Object.keys(TARGETS.rssMiBPerHost).map(Number))
      if (at(n)) rows.push({ hosts: n, what: 'memory / extra host', hostsmith: 'needs 1 in BENCH_HOSTS', floor: '', ratio: '', target: '—', verdict: '' });
  }
  return { rows, checks, perCount };
}

function table(rows: Row[]): string {
  const head: Row = { hosts: 'hosts', what: 'measurement', hostsmith: 'hostsmith (median)', floor: 'floor (median)', ratio: 'ratio', target: 'target', verdict: '' };
  const all = [head, ...rows];
  const keys = ['hosts', 'what', 'hostsmith', 'floor', 'ratio', 'target', 'verdict'] as const;
  const w = keys.map((k) => Math.max(...all.map((r) => String(r[k]).length)));
  return all
    .map(
      (r, i) =>
        keys
          .map((k, j) => (j >= 2 && j <= 4 ? String(r[k]).padStart(w[j]!) : String(r[k]).padEnd(w[j]!)))
          .join('  ')
          .trimEnd() + (i === 0 ? `\n${w.map((x) => '-'.repeat(x)).join('  ')}` : ''),
    )
    .join('\n');
}

function git(args: string[]): string {
  try {
    return execFileSync('git', args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return '';
  }
}

// ---------------------------------------------------------------- main

async function main(): Promise<number> {
  if (COUNTS.some((n) => !Number.isInteger(n) || n < 1 || n > 200) || !Number.isInteger(REPEAT) || REPEAT < 1) {
    say(`BENCH_HOSTS must be a comma list of host counts 1..200 and BENCH_REPEAT a whole number ≥ 1 (got ${process.env.BENCH_HOSTS}, ${process.env.BENCH_REPEAT})`);
    return 2;
  }
  let subject: Subject;
  try {
    subject = parseSubject(process.argv.slice(2));
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`${e.message ? `error: ${e.message}\n\n` : ''}${USAGE}\n`);
    return e.message ? 2 : 0;
  }
  if (BUILD) {
    say('building (npm run build)…');
    const b = await runChild('npm', ['run', 'build'], { cwd: ROOT });
    if (b.code !== 0) throw new BenchError(`npm run build failed:\n${b.stdout}${b.stderr}`);
  }
  const sha = git(['rev-parse', '--short', 'HEAD']) || 'nogit';
  // With BENCH_CLI the CLI is another build: this checkout's state says nothing about it.
  const dirty = process.env.BENCH_CLI ? null : !!git(['status', '--porcelain', '--', 'src', 'bin']);
  await ensureRootfs();
  const work = mkdtempSync(join(tmpdir(), 'hostsmith-bench-'));
  const recipe = subject.builtIn ? subject.builtIn.writeRecipe(work).path : subject.file!;
  // Before any host is up: nothing else runs on the machine.
  startup = await measureStartup(recipe);
  say(`start-up: node -e 0 ${startup.nodeS.toFixed(3)} s, --version ${startup.versionS.toFixed(3)} s, validate ${startup.validateS.toFixed(3)} s`);
  /** A built-in's step count; a recipe file's is read from its first run. */
  let steps: number | null = subject.builtIn?.steps ?? null;
  const types = subject.builtIn?.types ?? null;
  const about = () =>
    `${subject.name} (${subject.builtIn ? `${steps} steps: ${types!.join(', ')}` : `${steps ?? '?'} step(s) run on a fresh host, handlers included`}; first-run floor: ${subject.floorFrom ?? 'none'})`;
  const max = Math.max(...COUNTS);
  say(`recipe ${about()}: ${recipe}; work folder ${work}; starting ${max} host(s) (not timed)…`);
  const t0 = Date.now();
  const pool = await startPool(max, work, (sb) => sandboxes.push(sb));
  say(`${max} host(s) up in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  const startedAt = new Date();
  const results: CountResult[] = [];
  const out = process.env.BENCH_OUT ?? join(ROOT, 'bench-results', `${startedAt.toISOString().replace(/[:.]/g, '-')}-${sha}${dirty ? '-dirty' : ''}.json`);
  mkdirSync(dirname(out), { recursive: true });
  /** The JSON, written after each host count (`partial` until the end), so a stopped run keeps what it measured. */
  const save = (partial: boolean) => {
    const { checks, perCount } = summarize(results);
    const doc = {
      bench: 'hostsmith',
      partial,
      commit: sha,
      dirty,
      cli: CLI,
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      machine: { cpus: cpus().length, cpu: cpus()[0]?.model, kernel: release(), node: process.version, loadavgAtEnd: loadavg() },
      recipe: {
        name: subject.name,
        builtIn: !!subject.builtIn,
        path: subject.builtIn ? null : recipe,
        varsFile: subject.varsFile ?? null,
        steps,
        types,
        file: readFileSync(recipe, 'utf8'),
        floorFrom: subject.floorFrom,
        floorScript: subject.floor,
      },
      fairness:
        (subject.floor === null
          ? 'first runs: hostsmith on fresh hosts (each wiped right before), no first-run floor; '
          : 'first runs: the floor script and hostsmith each run on the same hosts, each right after a wipe (fresh hosts); ') +
        'no-op: ssh true on the same hosts right before the hostsmith rerun; all hosts at once in both; medians of the repeats',
      repeat: REPEAT,
      targets: TARGETS,
      summary: perCount,
      startup: startup ?? null,
      checks,
      raw: results,
    };
    writeFileSync(out, `${JSON.stringify(doc, null, 2)}\n`);
  };
  try {
    for (const n of [...new Set(COUNTS)].sort((a, b) => a - b)) {
      const cli = { work, recipe, varsFile: subject.varsFile, firstChanges: subject.builtIn?.steps ?? null, knownHosts: pool.knownHostsPath };
      results.push(await measureCount(pool, cli, subject.floor, n));
      steps ??= results[0]!.hostsmithFirst[0]!.stepsPerHost;
      save(true);
    }
  } finally {
    say('stopping the bench hosts…');
    await pool.stop();
    sandboxes.length = 0;
  }
  save(false);
  rmSync(work, { recursive: true, force: true });
  const { rows, checks, perCount } = summarize(results);
  const missed = checks.filter((c) => !c.met);
  const floorProblems = results.filter((r) => r.floorCheck?.changedSteps.length);
  process.stdout.write(`\nhostsmith bench — commit ${sha}${dirty ? ' (src changed since)' : ''}${dirty === null ? ` (CLI: ${CLI})` : ''}, median of ${REPEAT}, ${cpus().length} CPUs\n`);
  process.stdout.write(`recipe:    ${about()}${subject.varsFile ? `, vars from ${subject.varsFile}` : ''}\n`);
  process.stdout.write(
    subject.floor === null
      ? 'first run: fresh hosts (each wiped right before); no first-run floor (give one with --floor script.sh)\n'
      : 'first run: fresh hosts (each wiped right before), floor = the same changes as one sh script per host over one ssh, no checks\n',
  );
  process.stdout.write('no-op:     same hosts, floor = ssh host true; all hosts at once in both (--concurrency = hosts)\n\n');
  process.stdout.write(`${table(rows)}\n\n`);
  for (const p of perCount)
    if (p.median.marginalRssMiBPerHost !== undefined) process.stdout.write(`memory above the 1-host run at ${p.hosts} hosts: ${p.median.marginalRssMiBPerHost.toFixed(2)} MiB per extra host\n`);
  process.stdout.write(`results: ${out}\n`);
  for (const r of floorProblems)
    process.stdout.write(`floor check at ${r.hosts} host(s): hostsmith plan still changes ${r.floorCheck!.changedSteps.join('; ')} — the first-run floor is not the same changes\n`);
  if (floorProblems.length) return 2;
  if (missed.length) {
    process.stdout.write(`\nMISSED ${missed.length} of ${checks.length} target(s):\n${missed.map((c) => `  - ${c.name}: ${+c.value.toFixed(2)} (target ≤ ${c.target})`).join('\n')}\n`);
    return 1;
  }
  process.stdout.write(`\nall ${checks.length} target(s) met\n`);
  return 0;
}

// Sandboxes started so far: stopped on any exit path, signals included.
const sandboxes: Sandbox[] = [];
let stopping = false;
async function emergencyStop(why: string, code: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  say(`${why}: stopping the bench's children and hosts…`);
  killChildren();
  for (const sb of sandboxes.splice(0)) await sb.stop().catch((e) => say(`could not stop ${sb.dir}: ${(e as Error).message}`));
  process.exit(code);
}
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => void emergencyStop(sig, 130));

main().then(
  (code) => {
    process.exitCode = code;
  },
  async (e: unknown) => {
    process.stderr.write(`bench failed: ${e instanceof BenchError ? e.message : e instanceof Error ? e.stack : String(e)}\n`);
    killChildren();
    for (const sb of sandboxes.splice(0)) await sb.stop().catch(() => undefined);
    process.exitCode = 2;
  },
);
