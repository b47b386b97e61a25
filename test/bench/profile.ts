/**
 * First-run profile (issue 10 item 2): where a first run of the bench's 30-step recipe on N hosts
 * (default 10) spends its time and round trips. Runs the real CLI on fresh sandbox hosts with
 * test/bench/trace-execs.mjs preloaded (every exec channel and journal fsync, timed) and
 * `--cpu-prof` (the controller's CPU by function), then a traced no-op rerun. Changes nothing in
 * hostsmith. Prints a report and writes it (and the raw trace) as JSON.
 *
 *   node --import tsx test/bench/profile.ts
 *   env: PROFILE_HOSTS=10 · PROFILE_CLI=path/to/bin/hostsmith.js (another build, e.g. an older
 *   commit's worktree, for a before/after; BENCH_CLI is read too; default: this checkout's, built
 *   first unless BENCH_BUILD=0) · PROFILE_OUT=file.json
 */
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Sandbox } from '../hosts/hosts.js';
import { ensureRootfs } from '../hosts/rootfs.js';
import { startPool, type BenchHost, type Pool } from './pool.js';
import { hostCpuSeconds, killChildren, machineCpuSeconds, runChild, timedChild } from './proc.js';
import { floorScript, RECIPE_STEPS, writeRecipe } from './recipe.js';
import { sshArgs } from '../hosts/ssh.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const N = Number(process.env.PROFILE_HOSTS ?? 10);
const OTHER_CLI = process.env.PROFILE_CLI || process.env.BENCH_CLI;
const CLI = resolve(OTHER_CLI ?? join(ROOT, 'bin/hostsmith.js'));
// The traced CLI's checkout: the tracer hooks the ssh2 that this checkout's bundle loads.
const CLI_ROOT = resolve(dirname(CLI), '..');
const BUILD = !OTHER_CLI && process.env.BENCH_BUILD !== '0';
const PRELOAD = join(dirname(fileURLToPath(import.meta.url)), 'trace-execs.mjs');

type Json = Record<string, any>;
interface Exec {
  kind: 'exec';
  host: string;
  t0: number;
  t1: number;
  cmd: string;
  cmdLen: number;
  stdin: number;
  out?: number;
  code?: number | null;
  error?: string;
  /** A change's guard: the start of the read it runs again before changing anything. */
  guard?: string;
  /** A change's stages, by name (backup, change, read, …). */
  stages?: string[];
}
interface Fsync {
  kind: 'fsync';
  t0: number;
  t1: number;
}

const say = (msg: string): void => void process.stderr.write(`[profile] ${msg}\n`);
const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
const mean = (xs: number[]): number => (xs.length ? sum(xs) / xs.length : 0);

/** A short name for what a script does, from its text. */
export function classify(cmd: string): string {
  if (cmd.includes('hostsmith-probe.')) return 'probe batch';
  if (cmd.includes('os_id=$ID')) return 'facts';
  if (cmd.includes('out LOCKED') || cmd.includes('mkdir -- "$L"')) return 'lock take';
  if (/lock/.test(cmd) && /rm -r|rmdir/.test(cmd)) return 'lock release';
  if (/apt-get[^\n]* -s /.test(cmd) || /apt-get -s/.test(cmd)) return 'apt simulate';
  if (/apt-get[^\n]*install/.test(cmd)) return 'apt install';
  if (/apt-cache[^\n]*policy/.test(cmd)) return 'apt policy';
  if (/dpkg-query|dpkg -s/.test(cmd)) return 'dpkg query';
  // A change copies what it replaces first, in the same exec: name it by what it then does.
  if (cmd.includes('hs_enter()')) return 'write';
  if (/crontab/.test(cmd)) return 'crontab';
  if (/useradd|usermod|groupadd|groupmod|getent|\/etc\/passwd|\/etc\/group/.test(cmd)) return 'accounts';
  if (/service |update-rc\.d|\/etc\/init\.d|pgrep/.test(cmd)) return 'service';
  if (/backup|\.bak|hostsmith\/backups|\/var\/lib\/hostsmith/.test(cmd)) return 'backup';
  if (/mv -f|mktemp|\.tmp|cat >/.test(cmd)) return 'write';
  if (/stat |sha256sum|test -e|\[ -e|readlink/.test(cmd)) return 'read/stat';
  return 'other';
}

/** An exec's kind; a change that re-reads its step first (a guard) counts as a change of its kind. */
const kindOf = (x: Exec): string => {
  const k = x.stages?.includes('run') ? 'command' : classify(x.cmd);
  return x.guard !== undefined ? `change: ${k}` : k;
};

function analyze(trace: Json[], events: Json[], wallS: number): Json {
  const execs = trace.filter((x): x is Exec => x.kind === 'exec');
  const fsyncs = trace.filter((x): x is Fsync => x.kind === 'fsync');
  const connects = trace.filter((x) => x.kind === 'connect');
  const start = trace.find((x) => x.kind === 'start')?.t as number;
  const hosts = [...new Set(events.filter((e) => e.host).map((e) => e.host as string))].sort((a, b) => Number(a.slice(1)) - Number(b.slice(1)));
  const ms = (iso: string) => Date.parse(iso);

  // Step windows per host, from the --json events (ms resolution).
  interface Win {
    host: string;
    step: string;
    type: string;
    from: number;
    to: number;
    durationMs: number;
    execs: Exec[];
    fsyncs: number;
  }
  const wins: Win[] = [];
  const open = new Map<string, Json>();
  // --json prints no step-started: a step's turn is [finished − durationMs, finished].
  void open;
  for (const e of events) {
    if (e.event === 'step-finished') wins.push({ host: e.host, step: e.step, type: e.type, from: ms(e.time) - e.durationMs - 1, to: ms(e.time) + 1, durationMs: e.durationMs, execs: [], fsyncs: 0 });
  }
  const outside: Record<string, Exec[]> = {};
  for (const x of execs) {
    const w = wins.find((w) => w.host === x.host && x.t0 >= w.from && x.t0 <= w.to);
    if (w) w.execs.push(x);
    else (outside[x.host] ??= []).push(x);
  }
  // Per step type, averaged over hosts.
  const types: Record<string, Json> = {};
  for (const w of wins) {
    const t = (types[w.type] ??= { steps: 0, execs: 0, execMs: 0, stepMs: 0, byKind: {} as Record<string, number> });
    t.steps++;
    t.execs += w.execs.length;
    t.execMs += sum(w.execs.map((x) => x.t1 - x.t0));
    t.stepMs += w.durationMs;
    for (const x of w.execs) t.byKind[kindOf(x)] = (t.byKind[kindOf(x)] ?? 0) + 1;
  }
  const perType = Object.entries(types)
    .map(([type, t]) => ({
      type,
      stepsPerHost: t.steps / hosts.length,
      execsPerStep: t.execs / t.steps,
      msPerStep: t.stepMs / t.steps,
      execMsPerStep: t.execMs / t.steps,
      msPerHost: t.stepMs / hosts.length,
      byKind: Object.fromEntries(Object.entries(t.byKind as Record<string, number>).map(([k, v]) => [k, +(v / t.steps).toFixed(2)])),
    }))
    .sort((a, b) => b.msPerHost - a.msPerHost);
  const byKind: Record<string, { perHost: number; msPerHost: number }> = {};
  for (const x of execs) {
    const k = kindOf(x);
    const b = (byKind[k] ??= { perHost: 0, msPerHost: 0 });
    b.perHost += 1 / hosts.length;
    b.msPerHost += (x.t1 - x.t0) / hosts.length;
  }
  // Phases per host: process start → connected → first step → last step → exit.
  const phases = hosts.map((h) => {
    const hw = wins.filter((w) => w.host === h);
    const c = connects.find((x) => x.host === h);
    const first = Math.min(...hw.map((w) => w.from));
    const last = Math.max(...hw.map((w) => w.to));
    return {
      host: h,
      connectStartS: c ? (c.t0 - start) / 1000 : NaN,
      connectS: c ? (c.t1 - c.t0) / 1000 : NaN,
      toFirstStepS: (first - start) / 1000,
      stepsS: (last - first) / 1000,
      afterLastStepS: wallS - (last - start) / 1000,
    };
  });
  const h1 = hosts[0]!;
  const listing = [...(outside[h1] ?? []).map((x) => ({ step: '(outside steps)', x })), ...wins.filter((w) => w.host === h1).flatMap((w) => w.execs.map((x) => ({ step: `${w.step} [${w.type}]`, x })))]
    .sort((a, b) => a.x.t0 - b.x.t0)
    .map(({ step, x }) => ({
      atS: +((x.t0 - start) / 1000).toFixed(3),
      ms: +(x.t1 - x.t0).toFixed(1),
      step,
      kind: kindOf(x),
      stdin: x.stdin,
      out: x.out,
      cmd: x.cmd.replace(/\s+/g, ' ').slice(0, 160),
      items: (x as Exec & { items?: string[] }).items?.map(classify),
      stages: x.stages,
    }));
  // Probe batches: how many reads each carried, and of which kinds.
  const batches = execs.filter((x) => (x as Exec & { items?: string[] }).items);
  const batchItems = batches.map((x) => (x as Exec & { items: string[] }).items);
  const itemKinds: Record<string, number> = {};
  for (const it of batchItems.flat()) itemKinds[classify(it)] = (itemKinds[classify(it)] ?? 0) + 1 / hosts.length;
  return {
    hosts: hosts.length,
    wallS,
    execsPerHost: execs.length / hosts.length,
    execsOutsideStepsPerHost: sum(Object.values(outside).map((x) => x.length)) / hosts.length,
    execMsPerHost: sum(execs.map((x) => x.t1 - x.t0)) / hosts.length,
    fsync: { count: fsyncs.length, perHost: fsyncs.length / hosts.length, totalMs: sum(fsyncs.map((f) => f.t1 - f.t0)), meanMs: mean(fsyncs.map((f) => f.t1 - f.t0)) },
    phases: {
      connectS: mean(phases.map((p) => p.connectS)),
      toFirstStepS: mean(phases.map((p) => p.toFirstStepS)),
      stepsS: mean(phases.map((p) => p.stepsS)),
      afterLastStepS: mean(phases.map((p) => p.afterLastStepS)),
      perHost: phases,
    },
    perType,
    batches: {
      perHost: batches.length / hosts.length,
      itemsPerHost: batchItems.flat().length / hosts.length,
      itemsPerBatch: batchItems.map((x) => x.length).slice(0, 20),
      msEach: batches.slice(0, 20).map((x) => Math.round(x.t1 - x.t0)),
      itemKindsPerHost: itemKinds,
    },
    byKind: Object.fromEntries(Object.entries(byKind).sort((a, b) => b[1].msPerHost - a[1].msPerHost)),
    firstHostListing: listing,
  };
}

/** Self time by function and by file from a V8 .cpuprofile. */
function cpuProfile(dir: string): Json {
  const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
  if (!file) return { error: 'no .cpuprofile written' };
  const p = JSON.parse(readFileSync(join(dir, file), 'utf8')) as { nodes: Json[]; samples: number[]; timeDeltas: number[]; startTime: number; endTime: number };
  const self = new Map<number, number>();
  p.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i] ?? 0)));
  const byFn = new Map<string, number>();
  const byFile = new Map<string, number>();
  const short = (url: string) =>
    url
      .replace(/^file:\/\//, '')
      .replace(/.*\/node_modules\//, 'node_modules/')
      .replace(/.*\/dist\//, 'dist/') || '(native/vm)';
  for (const n of p.nodes) {
    const us = self.get(n.id) ?? 0;
    if (!us) continue;
    const cf = n.callFrame as { functionName: string; url: string; lineNumber: number };
    const key = `${cf.functionName || '(anonymous)'} ${short(cf.url)}:${cf.lineNumber + 1}`;
    byFn.set(key, (byFn.get(key) ?? 0) + us);
    const fileKey = cf.url ? short(cf.url).replace(/^(node_modules\/(@[^/]+\/)?[^/]+).*/, '$1') : `(${cf.functionName})`;
    byFile.set(fileKey, (byFile.get(fileKey) ?? 0) + us);
  }
  const top = (m: Map<string, number>, k: number) =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, k)
      .map(([name, us]) => ({ name, ms: +(us / 1000).toFixed(1) }));
  return { totalMs: (p.endTime - p.startTime) / 1000, sampledMs: sum([...self.values()]) / 1000, topFunctions: top(byFn, 30), topFiles: top(byFile, 25) };
}

async function tracedRun(pool: Pool, hosts: BenchHost[], work: string, recipe: string, state: string, tag: string): Promise<Json> {
  const inv = join(work, 'inventory.yml');
  pool.inventory(hosts, inv);
  const traceOut = join(work, `trace-${tag}.ndjson`);
  const profDir = mkdtempSync(join(work, `cpuprof-${tag}-`));
  const args = [
    '--cpu-prof',
    '--cpu-prof-dir',
    profDir,
    '--import',
    PRELOAD,
    CLI,
    'apply',
    recipe,
    '-i',
    inv,
    '--known-hosts',
    pool.knownHostsPath,
    '--state-dir',
    state,
    '--concurrency',
    String(hosts.length),
    '--json',
    '--yes',
  ];
  const hostCpu = () => hosts.reduce((a, h) => a + hostCpuSeconds(h.host.pid), 0);
  const side0 = { host: hostCpu(), machine: machineCpuSeconds() };
  const t = await timedChild(join(work, 'time.txt'), process.execPath, args, {
    env: {
      ...process.env,
      NO_COLOR: '1',
      HOSTSMITH_COUNT_EXECS: '1',
      BENCH_TRACE_OUT: traceOut,
      BENCH_TRACE_ROOT: CLI_ROOT,
      // ssh2 knows a host by address and port only; the report groups by inventory name.
      BENCH_TRACE_HOSTS: JSON.stringify(Object.fromEntries(hosts.map((h) => [`${h.host.address}:${h.host.port}`, h.name]))),
    },
    cwd: work,
  });
  const hostCpuS = hostCpu() - side0.host;
  const machineCpuS = machineCpuSeconds() - side0.machine;
  if (t.result.code !== 0) throw new Error(`traced ${tag} run exited ${t.result.code}:\n${t.result.stderr.slice(-3000)}`);
  const events = t.result.stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Json);
  const trace = readFileSync(traceOut, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Json);
  // The CLI's own count of exec channels per host: the trace must have seen every one of them.
  const counted: Record<string, number> = {};
  for (const m of t.result.stderr.matchAll(/^hostsmith: (\S+): (\d+) exec channel\(s\)$/gm)) counted[m[1]!] = Math.max(counted[m[1]!] ?? 0, Number(m[2]));
  const traced: Record<string, number> = {};
  for (const x of trace) if (x.kind === 'exec') traced[x.host] = (traced[x.host] ?? 0) + 1;
  const missed = hosts.filter((h) => traced[h.name] !== counted[h.name]).map((h) => `${h.name}: traced ${traced[h.name] ?? 0}, CLI counted ${counted[h.name] ?? '(none)'}`);
  if (missed.length) throw new Error(`the trace of the ${tag} does not match the CLI's exec counts (${missed.join('; ')}); is ${PRELOAD} hooking the ssh2 this CLI loads?`);
  const journalDir = join(state, 'runs');
  const journalLines = readdirSync(journalDir).map((f) => readFileSync(join(journalDir, f), 'utf8').split('\n').filter(Boolean).length);
  return {
    tag,
    cpuS: t.userS + t.sysS,
    execsCounted: counted,
    hostCpuS,
    machineCpuS,
    maxRssMiB: t.maxRssKiB / 1024,
    journalEntries: journalLines[journalLines.length - 1],
    ...analyze(trace, events, t.wallS),
    cpu: cpuProfile(profDir),
    trace,
  };
}

function report(r: Json): string {
  const f = (x: number, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : '—');
  const lines = [
    `## ${r.tag}: ${r.hosts} hosts, ${f(r.wallS)} s wall, ${f(r.cpuS)} controller CPU s (with the profiler on), ${f(r.maxRssMiB, 0)} MiB peak; host-side CPU ${f(r.hostCpuS)} s (all hosts; ${f(r.hostCpuS / r.hosts)} s/host), whole machine ${f(r.machineCpuS)} CPU s`,
    `execs/host ${f(r.execsPerHost, 1)} (the CLI's own count agrees: ${Object.values(r.execsCounted as Record<string, number>).join(', ')}; outside step turns: ${f(r.execsOutsideStepsPerHost, 1)}), exec time/host ${f(r.execMsPerHost / 1000)} s, journal entries ${r.journalEntries}, fsyncs ${r.fsync.count} (${f(r.fsync.perHost, 1)}/host, mean ${f(r.fsync.meanMs, 1)} ms, total ${f(r.fsync.totalMs / 1000)} s)`,
    `phases (mean over hosts): connect ${f(r.phases.connectS)} s; process start → first step ${f(r.phases.toFirstStepS)} s; steps ${f(r.phases.stepsS)} s; last step → exit ${f(r.phases.afterLastStepS)} s`,
    '',
    '| step type | steps/host | ms/step | exec ms/step | execs/step | ms/host | execs by kind (per step) |',
    '| --- | --: | --: | --: | --: | --: | --- |',
    ...(r.perType as Json[]).map(
      (t) =>
        `| ${t.type} | ${t.stepsPerHost} | ${f(t.msPerStep, 0)} | ${f(t.execMsPerStep, 0)} | ${f(t.execsPerStep, 1)} | ${f(t.msPerHost, 0)} | ${Object.entries(t.byKind)
          .map(([k, v]) => `${k} ${v}`)
          .join(', ')} |`,
    ),
    '',
    `probe batches: ${f(r.batches.perHost, 1)}/host carrying ${f(r.batches.itemsPerHost, 0)} reads/host; reads per batch (first host's order): ${r.batches.itemsPerBatch.join(' ')}; ms each: ${r.batches.msEach.join(' ')}`,
    `reads inside batches by kind, per host: ${Object.entries(r.batches.itemKindsPerHost as Record<string, number>)
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k} ${f(v, 0)}`)
      .join(', ')}`,
    '',
    '| exec kind | per host | ms per host |',
    '| --- | --: | --: |',
    ...Object.entries(r.byKind as Record<string, Json>).map(([k, v]) => `| ${k} | ${f(v.perHost, 1)} | ${f(v.msPerHost, 0)} |`),
    '',
    `controller CPU profile: ${f(r.cpu.sampledMs, 0)} ms sampled; top files:`,
    ...((r.cpu.topFiles ?? []) as Json[]).slice(0, 15).map((x) => `  ${String(x.ms).padStart(8)} ms  ${x.name}`),
    'top functions (self):',
    ...((r.cpu.topFunctions ?? []) as Json[]).slice(0, 20).map((x) => `  ${String(x.ms).padStart(8)} ms  ${x.name}`),
  ];
  return lines.join('\n');
}

/** One exec of the first host's listing: when, how long, what, in which step. */
const listLine = (x: Json): string =>
  `${String(x.atS).padStart(7)} s ${String(x.ms).padStart(7)} ms  ${x.kind.padEnd(18)} ${x.step.padEnd(30)} ${x.items ? `[batch of ${x.items.length}: ${x.items.join(', ')}]` : x.stages ? `[${x.stages.join(' + ')}] ${x.cmd}` : x.cmd}`;

const sandboxes: Sandbox[] = [];
async function main(): Promise<void> {
  if (BUILD) {
    const b = await runChild('npm', ['run', 'build'], { cwd: ROOT });
    if (b.code !== 0) throw new Error(`npm run build failed:\n${b.stdout}${b.stderr}`);
  }
  await ensureRootfs();
  const work = mkdtempSync(join(tmpdir(), 'hostsmith-profile-'));
  const { path: recipe } = writeRecipe(work);
  say(`starting ${N} host(s) in ${work}…`);
  const pool = await startPool(N, work, (sb) => sandboxes.push(sb));
  try {
    const hosts = pool.hosts.slice(0, N);
    // The first-run floor on the same (wiped) hosts, for its host-side CPU beside hostsmith's.
    await pool.wipe(hosts);
    const hostCpu = () => hosts.reduce((a, h) => a + hostCpuSeconds(h.host.pid), 0);
    const f0 = { host: hostCpu(), machine: machineCpuSeconds(), t: performance.now() };
    const fr = await Promise.all(hosts.map((h) => runChild('/usr/bin/ssh', [...sshArgs(pool.target(h), 'root'), '--', 'sh -s'], { input: floorScript() })));
    if (fr.some((r) => r.code !== 0)) throw new Error(`floor script failed: ${fr.map((r) => r.stderr).join('')}`);
    const floor = { wallS: (performance.now() - f0.t) / 1000, hostCpuS: hostCpu() - f0.host, machineCpuS: machineCpuSeconds() - f0.machine };
    say(`floor: ${floor.wallS.toFixed(2)} s, host-side CPU ${floor.hostCpuS.toFixed(2)} s`);
    await pool.wipe(hosts);
    const state = mkdtempSync(join(work, 'state-'));
    say('traced first run…');
    const first = await tracedRun(pool, hosts, work, recipe, state, 'first run');
    say('traced no-op rerun…');
    const noop = await tracedRun(pool, hosts, work, recipe, state, 'no-op rerun');
    const text = `# first-run profile: ${RECIPE_STEPS}-step bench recipe, CLI ${CLI}\n\nfirst-run floor (same changes as one sh script per host, same hosts wiped): ${floor.wallS.toFixed(2)} s wall, host-side CPU ${floor.hostCpuS.toFixed(2)} s, whole machine ${floor.machineCpuS.toFixed(2)} CPU s\n\n${report(first)}\n\n${report(noop)}\n\n### first host, every exec of the first run\n\n${(first.firstHostListing as Json[]).map(listLine).join('\n')}\n\n### first host, every exec of the no-op rerun\n\n${(noop.firstHostListing as Json[]).map(listLine).join('\n')}\n`;
    process.stdout.write(text);
    const out = process.env.PROFILE_OUT ?? join(work, 'profile.json');
    writeFileSync(out, JSON.stringify({ cli: CLI, floor, first, noop }, null, 1));
    writeFileSync(out.replace(/\.json$/, '.md'), text);
    say(`written ${out} and ${out.replace(/\.json$/, '.md')}`);
  } finally {
    await pool.stop();
    sandboxes.length = 0;
  }
}

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    killChildren();
    void Promise.all(sandboxes.splice(0).map((sb) => sb.stop().catch(() => undefined))).then(() => process.exit(130));
  });
}
main().catch(async (e: unknown) => {
  process.stderr.write(`profile failed: ${e instanceof Error ? e.stack : String(e)}\n`);
  killChildren();
  for (const sb of sandboxes.splice(0)) await sb.stop().catch(() => undefined);
  process.exitCode = 1;
});
