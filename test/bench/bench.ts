/**
 * `npm run bench`: speed, round trips and memory of a real run against sandbox hosts.
 * Prints a table and exits 1 when a target is missed. Timings are never asserted in tests.
 */
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadRecipe } from '../../src/recipe/load.js';
import { runRecipe, type HostTarget } from '../../src/engine/fleet.js';
import { SshTransport } from '../../src/transport/ssh.js';
import type { ShellTransport } from '../../src/transport/base.js';
import { startSandbox } from '../hosts/hosts.js';
import { ensureRootfs } from '../hosts/rootfs.js';

const HOSTS = Number(process.env.BENCH_HOSTS ?? 3);
const STEPS = Number(process.env.BENCH_STEPS ?? 60);

const TARGETS = {
  /** An unchanged re-apply of STEPS file/template steps on HOSTS hosts. */
  idempotentApplyMs: 2_000,
  firstApplyMs: 5_000,
  planMs: 2_000,
  /** Round trips per unchanged step (the check). */
  execsPerUnchangedStep: 1.05,
  /** Round trips per changed file step: check, backup-or-not, write, post-check. */
  execsPerChangedStep: 4,
  connectionsPerHost: 1,
  peakRssMb: 200,
};

function recipe(dir: string): string {
  mkdirSync(join(dir, 'templates'));
  writeFileSync(join(dir, 'templates/item.conf.hbs'), 'item {{n}} on {{facts.hostname}}\n{{#each list}}- {{this}}\n{{/each}}');
  const steps: string[] = [];
  for (let i = 0; i < STEPS; i++) {
    steps.push(
      i % 2
        ? `  - name: File ${i}\n    file: { path: /srv/bench/f${i}.txt, content: "file ${i}\\n", mode: "0640" }`
        : `  - name: Template ${i}\n    template: { src: item.conf.hbs, dest: /srv/bench/t${i}.conf, vars: { n: ${i}, list: [a, b, c] } }`,
    );
  }
  writeFileSync(join(dir, 'bench.yml'), `name: bench\nsteps:\n${steps.join('\n')}\n`);
  return join(dir, 'bench.yml');
}

async function main(): Promise<void> {
  await ensureRootfs();
  const sb = await startSandbox({ count: HOSTS });
  let peakRss = 0;
  const sample = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 20);
  try {
    const dir = mkdtempSync(join(tmpdir(), 'hostsmith-bench-'));
    const r = await loadRecipe(recipe(dir));
    let execs = 0;
    let connections = 0;
    const open: ShellTransport[] = [];
    const targets = (): HostTarget[] =>
      sb.hosts.map((h) => {
        let conn: Promise<ShellTransport> | undefined;
        return {
          name: h.name,
          vars: {},
          sudo: false,
          connect: () =>
            (conn ??= SshTransport.connect({ name: h.name, host: h.address, port: h.port, user: 'root', identities: [sb.keyPath], knownHostsFile: sb.knownHostsPath, acceptNewHostKeys: false }).then((t) => {
              connections++;
              const exec = t.exec.bind(t);
              t.exec = (cmd, o) => {
                execs++;
                return exec(cmd, o);
              };
              open.push(t);
              return t;
            })),
        };
      });
    const stateDir = join(dir, 'state');
    const timed = async (mode: 'plan' | 'apply') => {
      execs = 0;
      connections = 0;
      const t0 = performance.now();
      const rep = await runRecipe({ recipe: r, targets: targets(), mode, stateDir });
      if (rep.exitCode !== 0) throw new Error(`bench run failed: ${JSON.stringify(rep.hosts)}`);
      return { ms: performance.now() - t0, execs, connections };
    };
    const first = await timed('apply');
    const again = await timed('apply');
    const plan = await timed('plan');
    const per = HOSTS * STEPS;
    // Fixed per-host costs (facts, lock, release) are not per step.
    const perHostFixed = 3;
    const rows: Array<[string, number, number, boolean]> = [
      ['first apply (ms)', Math.round(first.ms), TARGETS.firstApplyMs, first.ms <= TARGETS.firstApplyMs],
      ['idempotent apply (ms)', Math.round(again.ms), TARGETS.idempotentApplyMs, again.ms <= TARGETS.idempotentApplyMs],
      ['plan (ms)', Math.round(plan.ms), TARGETS.planMs, plan.ms <= TARGETS.planMs],
      ['round trips / changed step', +((first.execs - HOSTS * perHostFixed) / per).toFixed(2), TARGETS.execsPerChangedStep, (first.execs - HOSTS * perHostFixed) / per <= TARGETS.execsPerChangedStep],
      ['round trips / unchanged step', +((again.execs - HOSTS * perHostFixed) / per).toFixed(2), TARGETS.execsPerUnchangedStep, (again.execs - HOSTS * perHostFixed) / per <= TARGETS.execsPerUnchangedStep],
      ['ssh connections / host', first.connections / HOSTS, TARGETS.connectionsPerHost, first.connections / HOSTS <= TARGETS.connectionsPerHost],
      ['peak RSS (MB)', Math.round(peakRss / 2 ** 20), TARGETS.peakRssMb, peakRss / 2 ** 20 <= TARGETS.peakRssMb],
    ];
    await Promise.all(open.map((t) => t.close()));
    process.stdout.write(`hostsmith bench: ${HOSTS} hosts × ${STEPS} steps\n`);
    for (const [name, value, target, ok] of rows) process.stdout.write(`${ok ? 'ok  ' : 'MISS'}  ${name.padEnd(30)} ${String(value).padStart(8)}   target ≤ ${target}\n`);
    process.exitCode = rows.every((x) => x[3]) ? 0 : 1;
  } finally {
    clearInterval(sample);
    await sb.stop();
  }
}

main().catch((e) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? e.stack : e}\n`);
  process.exitCode = 1;
});
