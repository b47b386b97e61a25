/**
 * vitest globalSetup: decides once per run whether real-host tests can run,
 * builds the Debian rootfs up front (so test workers never race to build it),
 * and at the end stops every sandbox this run started and left behind.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { describeMissing, prerequisites, RUN_DIR_ENV, stopRun, sweepStale } from './hosts.js';
import './provided-context.js';
import { ensureRootfs } from './rootfs.js';
import { log, procId, removeTree, SANDBOX_ROOT } from './util.js';

const REQUIRE_ENV = 'HOSTSMITH_REQUIRE_HOSTS';
const SKIP_ENV = 'HOSTSMITH_SKIP_HOSTS';

function banner(reason: string): void {
  const bar = '!'.repeat(78);
  process.stderr.write(`\n${bar}\n!!  REAL-HOST TESTS WILL BE SKIPPED\n!!  ${reason.replace(/\n/g, '\n!!  ')}\n` + `!!  (set ${REQUIRE_ENV}=1 to make this an error instead, as CI does)\n${bar}\n\n`);
}

/** Why sandbox hosts cannot run here, or undefined if they can (the rootfs is then built). */
async function unavailableReason(): Promise<string | undefined> {
  if (process.env[SKIP_ENV] === '1') return `disabled by ${SKIP_ENV}=1`;
  const pre = prerequisites();
  if (!pre.ok) return `sandbox hosts need: ${describeMissing(pre.missing)}`;
  try {
    await ensureRootfs();
    return undefined;
  } catch (e) {
    return `building the Debian rootfs failed: ${(e as Error).message}`;
  }
}

/** The same for systemd hosts: what this machine lacks to boot them (their rootfs is built apart). */
function systemdUnavailableReason(): string | undefined {
  const pre = prerequisites({ kind: 'systemd' });
  return pre.ok ? undefined : `systemd sandbox hosts need: ${describeMissing(pre.missing)}`;
}

/**
 * Every temporary folder of this run (fixtures, state dirs, inventories, the CLI's own) goes under
 * one folder, removed at the end whatever failed: the workers and the CLIs they start inherit
 * TMPDIR, so os.tmpdir() points there.
 */
function privateTmp(): () => void {
  const dir = mkdtempSync(join(tmpdir(), 'hostsmith-test-'));
  const before = process.env.TMPDIR;
  process.env.TMPDIR = dir;
  return () => {
    rmSync(dir, { recursive: true, force: true });
    if (before === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = before;
  };
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const dropTmp = privateTmp();
  const systemdMissing = process.env[SKIP_ENV] === '1' ? `disabled by ${SKIP_ENV}=1` : systemdUnavailableReason();
  // The systemd rootfs (~2 min the first time) builds beside the plain one and on while the first
  // tests run: a test that needs it waits on the build's lock, and a build that fails fails that test.
  const systemdBuild = systemdMissing
    ? Promise.resolve()
    : ensureRootfs('systemd').then(
        () => undefined,
        (e: Error) => log(`building the systemd rootfs failed (its tests will try again and say why): ${e.message}`),
      );
  const reason = await unavailableReason();
  const systemdReason = reason ?? systemdMissing;
  if (systemdReason && process.env[REQUIRE_ENV] === '1') {
    dropTmp();
    throw new Error(`${REQUIRE_ENV}=1 but real-host tests on systemd hosts cannot run.\n${systemdReason}`);
  }
  project.provide('systemdAvailable', !systemdReason);
  project.provide('systemdReason', systemdReason ?? '');
  if (systemdReason && !reason) banner(`tests on systemd hosts only: ${systemdReason}`);
  if (reason) {
    if (process.env[REQUIRE_ENV] === '1') {
      dropTmp();
      throw new Error(`${REQUIRE_ENV}=1 but real-host tests cannot run.\n${reason}`);
    }
    banner(reason);
    project.provide('hostsAvailable', false);
    project.provide('hostsReason', reason);
    return async () => {
      await systemdBuild;
      dropTmp();
    };
  }
  const swept = await sweepStale();
  if (swept.length) log(`cleaned up after earlier runs: ${swept.join(', ')}`);
  mkdirSync(SANDBOX_ROOT, { recursive: true });
  const runDir = mkdtempSync(join(SANDBOX_ROOT, 'run-'));
  writeFileSync(join(runDir, 'owner.json'), JSON.stringify(procId(process.pid)));
  process.env[RUN_DIR_ENV] = runDir; // inherited by the test workers, which are forked after this
  project.provide('hostsAvailable', true);
  project.provide('hostsReason', '');
  return async () => {
    await systemdBuild;
    const left = await stopRun(runDir);
    if (left.length) log(`stopped ${left.length} sandbox(es) a test left running: ${left.join(', ')}`);
    await removeTree(runDir);
    delete process.env[RUN_DIR_ENV];
    dropTmp();
  };
}
