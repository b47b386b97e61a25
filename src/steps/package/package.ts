import { existsScript } from '../path-batch.js';
import { z } from 'zod';
import { compact, names } from '../undo-text.js';
import { ANYTHING } from '../footprint.js';
import { StepError } from '../../errors.js';
import { DURATION_HINT, parseDuration } from '../../duration.js';
import { unifiedDiff } from '../../render/diff.js';
import { quote } from '../../shell/script.js';
import { posix } from 'node:path';
import { ACCOUNT_FILES, backupAccountsScript, entryNames, restoreAccounts, type AccountFile, type Touched, flag } from '../accounts.js';
import { backupDirsScript, backupPath, restoreFromBackup, restoreScript } from '../backup.js';
import { runOk, stateFingerprint, tail, type HostEnv, type Plan, type StepContext, type StepType } from '../step.js';
import type { ExecOptions } from '../../transport/transport.js';
import { randomBytes } from 'node:crypto';
import { MovedError, guardScript, movedError, runOneExec } from '../../shell/one-exec.js';
import {
  APT_ENV,
  APT_READ_OPTS,
  APT_WRITE_OPTS,
  PKG_NAME_RE,
  PKG_VERSION_RE,
  aptErrors,
  dpkgErrors,
  hasConfigOnly,
  isInstalled,
  isKept,
  missingVersions,
  parseSim,
  parseSpec,
  simulateScript,
  splitSim,
  splitState,
  stateScript,
  transactionArgs,
  unknownPackages,
  updateScript,
  dpkgWaitScript,
  UCF_DIR,
  INPUTS_STAMP,
  DPKG_LIST_ALL,
  dpkgChanges,
  formatSpec,
  parseDpkgList,
  parseExtendedStates,
  parsePolicy,
  policyScript,
  ownersScript,
  parseOwners,
  treeManifestScript,
  type DpkgEntry,
  type PkgSpec,
  type SimResult,
} from './apt.js';

const NAME_RULE = 'not a valid Debian package name (lower-case letters, digits, + - . ; at least 2 characters)';
const pkgName = z.string().refine(
  (s) => PKG_NAME_RE.test(s),
  (s) => ({ message: `"${s}": ${NAME_RULE}` }),
);
const pkgSpec = z.string().superRefine((s, ctx) => {
  const { name, version } = parseSpec(s);
  if (!PKG_NAME_RE.test(name)) ctx.addIssue({ code: z.ZodIssueCode.custom, message: `"${s}": ${NAME_RULE}; pin a version as name=version` });
  else if (version !== undefined && !PKG_VERSION_RE.test(version)) ctx.addIssue({ code: z.ZodIssueCode.custom, message: `"${s}": "${version}" is not a valid Debian version` });
});
/** A single name is accepted where a list is expected, as in Ansible's `name: nginx`. */
const listOf = <T extends z.ZodTypeAny>(item: T) => z.union([item.transform((s) => [s] as string[]), z.array(item)]);

export const packageSchema = z
  .object({
    install: listOf(pkgSpec).default([]),
    remove: listOf(pkgName).default([]),
    update_cache: flag.default(false),
    /** Lists younger than this are not refreshed again (seconds or a duration such as 1h). */
    cache_valid_time: z
      .union([z.string(), z.number()])
      .transform((v, ctx) => {
        const ms = parseDuration(v);
        if (ms === undefined) {
          ctx.addIssue({ code: z.ZodIssueCode.custom, message: `invalid duration "${v}": ${DURATION_HINT}` });
          return z.NEVER;
        }
        return ms;
      })
      .default(3600),
  })
  .strict()
  .superRefine((p, ctx) => {
    if (!p.install.length && !p.remove.length && !p.update_cache) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'nothing to do: give install, remove or update_cache: true', path: ['install'] });
    }
    const installNames = new Set(p.install.map((s) => parseSpec(s).name));
    p.remove.forEach((n, i) => {
      if (installNames.has(n)) ctx.addIssue({ code: z.ZodIssueCode.custom, message: `${n} is both installed and removed`, path: ['remove', i] });
    });
  });

export type PackageParams = z.output<typeof packageSchema>;

export interface PackageState {
  /** What dpkg knows now: name → version and status. */
  dpkg: Record<string, DpkgEntry>;
  /** Seconds since the apt lists were last refreshed; null when there are none. */
  listsAgeS: number | null;
  /** apt's dry run of the pending transaction; absent when nothing is pending. */
  sim?: SimResult;
  /** Packages marked automatically installed (read only when the dry run removes or changes some). */
  auto?: string[];
  /** The dry run used freshly downloaded lists (the host's own were missing or stale). */
  freshLists?: boolean;
  /** Stamp of what a dry run's answer depends on (apt.ts INPUTS_STAMP); not part of the state key. */
  inputs?: string;
  /**
   * A plain apply (StepContext.planUnseen) of installs only: apt has a candidate for every package
   * to install (apt-cache policy), and no dry run was made. The install works out what it did.
   */
  known?: boolean;
}

export interface PackageUndo {
  /** Installed by the step, unknown to dpkg before: purged on rollback. */
  purge: string[];
  /** Installed by the step over leftover config files: removed (config kept) on rollback. */
  remove: string[];
  /** Removed, upgraded or downgraded by the step: reinstalled at this version on rollback. */
  reinstall: Array<{ name: string; version: string; auto: boolean }>;
  /**
   * The lists above are not known before the change (no dry run was made): rollback works them
   * out from the snapshot of dpkg the install took first (SNAPSHOT in the step's residue folder)
   * and dpkg now. A completed step's exact lists are journaled with its result instead.
   */
  snapshot?: true;
}

interface Pending {
  install: PkgSpec[];
  remove: string[];
}

/**
 * What only apt can decide: the packages dpkg's status alone does not show as already done (not
 * installed, half-installed, at another version than the one pinned; installed and held is done)
 * and the removals. Empty: the step is a no-op decided from dpkg alone, and the check asks apt
 * nothing.
 */
function pending(p: PackageParams, dpkg: Record<string, DpkgEntry>): Pending {
  return {
    install: p.install.map(parseSpec).filter((s) => !isKept(dpkg[s.name]) || (s.version !== undefined && dpkg[s.name]!.version !== s.version)),
    remove: p.remove.filter((n) => isInstalled(dpkg[n])),
  };
}

function refreshDue(p: PackageParams, s: Pick<PackageState, 'listsAgeS'>): boolean {
  return p.update_cache && (s.listsAgeS === null || s.listsAgeS * 1000 >= p.cache_valid_time);
}

function age(s: number | null): string {
  if (s === null) return 'never refreshed';
  if (s < 120) return `refreshed ${s}s ago`;
  if (s < 7200) return `refreshed ${Math.round(s / 60)} min ago`;
  if (s < 172800) return `refreshed ${Math.round(s / 3600)} h ago`;
  return `refreshed ${Math.round(s / 86400)} days ago`;
}

function undoOf(sim: SimResult, dpkg: Record<string, DpkgEntry>, auto: string[]): PackageUndo {
  const autoSet = new Set(auto);
  const fresh = sim.inst.filter((i) => i.from === undefined).map((i) => i.name);
  return {
    purge: fresh.filter((n) => !hasConfigOnly(dpkg[n])).sort(),
    remove: fresh.filter((n) => hasConfigOnly(dpkg[n])).sort(),
    reinstall: [
      ...sim.inst.filter((i) => i.from !== undefined).map((i) => ({ name: i.name, version: i.from!, auto: autoSet.has(i.name) })),
      ...sim.remv.map((r) => ({ name: r.name, version: r.version || (dpkg[r.name]?.version ?? ''), auto: autoSet.has(r.name) })),
    ].sort((a, b) => a.name.localeCompare(b.name)),
  };
}

function describe(sim: SimResult, named: Set<string>): string {
  const fresh = sim.inst.filter((i) => i.from === undefined);
  const changedVersions = sim.inst.filter((i) => i.from !== undefined);
  const parts: string[] = [];
  const list = (xs: string[]) => xs.join(', ');
  if (fresh.length) {
    const own = fresh.filter((i) => named.has(i.name)).map((i) => i.name);
    const deps = fresh
      .filter((i) => !named.has(i.name))
      .map((i) => i.name)
      .sort();
    parts.push(`install ${list(own)}${deps.length ? `${own.length ? ' + ' : ''}dependencies ${list(deps)}` : ''}`);
  }
  if (changedVersions.length) parts.push(`change ${list(changedVersions.map((i) => `${i.name} ${i.from} → ${i.version}`))}`);
  if (sim.remv.length) {
    const own = sim.remv.filter((r) => named.has(r.name)).map((r) => r.name);
    const deps = sim.remv
      .filter((r) => !named.has(r.name))
      .map((r) => r.name)
      .sort();
    parts.push(`remove ${list(own)}${deps.length ? `${own.length ? ' + ' : ''}dependents ${list(deps)}` : ''}`);
  }
  return parts.join('; ');
}

/** Before/after of the packages the transaction touches, one `name version` line each. */
function packageDiff(sim: SimResult): string {
  const before = [...sim.inst.filter((i) => i.from !== undefined).map((i) => `${i.name} ${i.from}`), ...sim.remv.map((r) => `${r.name} ${r.version}`)];
  const after = sim.inst.map((i) => `${i.name} ${i.version}`);
  const text = (xs: string[]) => (xs.length ? `${xs.sort().join('\n')}\n` : '');
  return unifiedDiff('dpkg packages', text(before), text(after));
}

function wantedSummary(p: PackageParams): string {
  const parts = [p.install.length ? `${p.install.join(', ')} installed` : '', p.remove.length ? `${p.remove.join(', ')} absent` : ''];
  return parts.filter(Boolean).join('; ');
}

export function planPackage(p: PackageParams, s: PackageState): Plan<PackageUndo> {
  const todo = pending(p, s.dpkg);
  const due = refreshDue(p, s);
  const hasPackages = p.install.length > 0 || p.remove.length > 0;
  const nothing: PackageUndo = { purge: [], remove: [], reinstall: [] };
  if (!todo.install.length && !todo.remove.length) {
    if (!hasPackages && due) return { changed: true, summary: `refresh apt lists (${age(s.listsAgeS)})`, undo: nothing };
    if (!hasPackages) return { changed: false, summary: `apt lists are fresh (${age(s.listsAgeS)})`, undo: null };
    return { changed: false, summary: wantedSummary(p), undo: null };
  }
  if (!s.sim && s.known && !todo.remove.length) {
    // No dry run (a plain apply): what apt brings along is worked out, and journaled, as it installs.
    const refresh = due ? `refresh apt lists (${age(s.listsAgeS)}), then ` : '';
    const what = todo.install.map((x) => (s.dpkg[x.name] && isInstalled(s.dpkg[x.name]) ? `${x.name} ${s.dpkg[x.name]!.version} → ${x.version}` : formatSpec(x)));
    return { changed: true, action: 'create', summary: `${refresh}install ${what.join(', ')} (with what apt adds to it)`, undo: { purge: [], remove: [], reinstall: [], snapshot: true } };
  }
  if (!s.sim) throw new Error('package: a transaction is pending but the check did not simulate it');
  if (!s.sim.inst.length && !s.sim.remv.length) return { changed: false, summary: `${wantedSummary(p)} (already satisfied)`, undo: null };
  const named = new Set([...p.install.map((x) => parseSpec(x).name), ...p.remove]);
  const refresh = due || s.freshLists ? `refresh apt lists (${age(s.listsAgeS)}), then ` : '';
  return {
    changed: true,
    action: todo.install.length && !todo.remove.length ? 'create' : todo.remove.length && !todo.install.length ? 'remove' : 'change',
    summary: `${refresh}${describe(s.sim, named)}`,
    diff: packageDiff(s.sim),
    undo: undoOf(s.sim, s.dpkg, s.auto ?? []),
  };
}

async function exec(ctx: StepContext, cmd: string, o: ExecOptions = {}) {
  return ctx.exec(cmd, { ...o, env: APT_ENV });
}

function failure(what: string, r: { code: number; stderr: string; stdout: string }): StepError {
  const said = [...dpkgErrors(`${r.stdout}\n${r.stderr}`), ...aptErrors(r.stderr)].join('\n') || tail(r.stderr, 15) || tail(r.stdout, 15);
  const hint = /are you root\?/.test(r.stderr) ? ' (apt needs root: log in as root or use sudo: true / --sudo)' : '';
  return new StepError(`${what} (exit ${r.code})${said ? `: ${said}` : ''}${hint}`, { code: r.code, stderr: r.stderr });
}

async function readState(ctx: StepContext): Promise<Pick<PackageState, 'dpkg' | 'listsAgeS' | 'inputs'>> {
  const r = await exec(ctx, stateScript());
  if (r.code !== 0) throw failure(`cannot read the installed packages on ${ctx.host}`, r);
  return splitState(r.stdoutRaw);
}

async function simulate(ctx: StepContext, p: PackageParams, todo: Pending, freshLists: boolean, inputs?: string) {
  const r = await exec(ctx, simulateScript(transactionArgs(todo.install, todo.remove), freshLists, inputs, ctx.planOnly !== false));
  if (r.code === 0) return { ...splitSim(r.stdout), freshLists };
  const unknown = unknownPackages(r.stderr);
  if (unknown.length && p.update_cache && !freshLists) return simulate(ctx, p, todo, true, inputs);
  if (unknown.length) {
    const hint = p.update_cache ? '' : ', or refresh the apt lists with update_cache: true';
    throw new StepError(
      `package${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')} unknown to apt on ${ctx.host}${freshLists ? ' (even with freshly downloaded lists)' : ''} (${aptErrors(r.stderr).join(' ')}) — check the name${hint}`,
      { code: r.code, stderr: r.stderr },
    );
  }
  throw failure(`apt on ${ctx.host} cannot plan installing ${todo.install.map((s) => s.name).join(', ') || '-'} / removing ${todo.remove.join(', ') || '-'}`, r);
}

/**
 * apt has a candidate for each package (and the pinned version, if any): a read of apt's cache
 * (tens of ms), not a dry run (its resolver: about a second). Anything else (an unknown name, a
 * virtual package) is left to the dry run, which says what is wrong or what apt would pick.
 */
async function aptKnows(ctx: StepContext, install: PkgSpec[], inputs?: string): Promise<boolean> {
  const r = await exec(
    ctx,
    policyScript(
      install.map((x) => x.name),
      inputs,
    ),
  );
  if (r.code !== 0) return false;
  const known = parsePolicy(r.stdout);
  return install.every((x) => {
    const k = known[x.name];
    return !!k?.candidate && (x.version === undefined || k.versions.includes(x.version));
  });
}

/** `lean`: an install apt knows is left without a dry run (a plain apply's check, and the reads again of a plan made so). */
async function checkPackages(ctx: StepContext, p: PackageParams, lean = ctx.planUnseen === true): Promise<PackageState> {
  const base = await readState(ctx);
  const todo = pending(p, base.dpkg);
  if (!todo.install.length && !todo.remove.length) return base;
  const noLists = p.update_cache && base.listsAgeS === null;
  // A plain apply needs no dry run of an install apt can make: the install records what it did.
  if (lean && !todo.remove.length && !noLists && (await aptKnows(ctx, todo.install, base.inputs))) return { ...base, known: true };
  // With no lists at all there is nothing to simulate against: use fresh ones if we may refresh.
  const sim = await simulate(ctx, p, todo, p.update_cache && base.listsAgeS === null, base.inputs);
  return { ...base, ...sim };
}

/**
 * The install as one exec (guard.ts): held to the stamp of apt's inputs `s` was read with (moved:
 * MovedError, nothing done), it backs up what maintainer scripts may change (accounts, ucf's
 * state), runs the transaction, records what it left, and reads the packages back for the
 * journal's post-state. A failed transaction comes back as its exit code and output.
 */
async function install(ctx: StepContext, p: PackageParams, s: PackageState): Promise<{ code: number; stdout: string; stderr: string; state?: PackageState; before?: string }> {
  const go = pending(p, s.dpkg);
  const dir = residueDir(ctx);
  const mark = `hostsmith-after-${randomBytes(8).toString('hex')}`;
  const snap = quote(posix.join(dir, SNAPSHOT));
  const {
    r,
    kept: stdout,
    read,
    failed,
  } = await runOneExec(
    { exec: (cmd, o) => exec(ctx, cmd, o) },
    {
      ...(s.inputs ? { guard: guardScript(INPUTS_STAMP, Buffer.from(`${s.inputs}\n`)) } : {}),
      stages: [
        { name: 'accounts', script: backupAccountsScript(ctx, posix.join(dir, 'accounts')) },
        { name: 'ucf', script: backupUcfScript(ctx, dir) },
        { name: 'snapshot', script: snapshotBeforeScript(dir) },
        { name: 'paths', script: pathsBeforeScript(dir) },
        { name: 'install', script: `apt-get ${APT_WRITE_OPTS} --allow-downgrades install ${transactionArgs(go.install, go.remove)}`, out: '' },
        { name: 'after', script: snapshotAfterScript(ctx, dir) },
      ],
      // dpkg before (the first attempt's snapshot), then after: what the transaction did.
      read: `cat ${snap} || exit 1\nprintf '%s\\n' ${mark}\n${stateScript()}`,
    },
    `apt's inputs on ${ctx.host} moved after they were read`,
  );
  if (failed?.stage === 'install') return { code: failed.code, stdout, stderr: failed.said };
  const what: Record<string, string> = {
    accounts: `backing up the account files to ${posix.join(dir, 'accounts')}`,
    ucf: `backing up ${UCF_DIR} on ${ctx.host} to ${dir}/ucf`,
    snapshot: `recording dpkg's packages before the install on ${ctx.host} in ${posix.join(dir, SNAPSHOT)}`,
    paths: `listing ${LEFTOVER_DIRS.join(', ')} before the install on ${ctx.host}`,
    after: `recording the account files and ${UCF_DIR} after the install on ${ctx.host}`,
  };
  if (failed && failed.stage !== 'read') throw new StepError(`${what[failed.stage] ?? failed.stage} failed: ${tail(failed.said) || `exit ${failed.code}`}`, { code: failed.code, stderr: r.stderr });
  let state: PackageState | undefined;
  let before: string | undefined;
  try {
    const rest = read ?? '';
    const cut = rest.indexOf(`${mark}\n`);
    if (cut < 0) throw new Error('no snapshot');
    before = rest.slice(0, cut);
    const after = splitState(rest.slice(cut + mark.length + 1));
    // Still something to do (it should not be): the engine reads it on its own, simulation and all.
    const todo = pending(p, after.dpkg);
    if (read !== undefined && !failed && !todo.install.length && !todo.remove.length) state = after;
  } catch {
    state = undefined;
  }
  return { code: 0, stdout, stderr: failed ? failed.said : r.stderr, ...(state ? { state } : {}), ...(before !== undefined && state ? { before } : {}) };
}

/** The snapshot of dpkg's packages the install takes first (DPKG_LIST), and apt's auto marks then. */
const SNAPSHOT = 'dpkg.before';
const AUTO_SNAPSHOT = 'extended_states.before';

/** Shell: the snapshot, taken once per step (a retried apply keeps the first), whole or not at all. */
function snapshotBeforeScript(dir: string): string {
  const f = quote(posix.join(dir, SNAPSHOT));
  const a = quote(posix.join(dir, AUTO_SNAPSHOT));
  return [
    `if [ ! -e ${f} ]; then`,
    `{ ${DPKG_LIST_ALL}; } > ${f}.part || exit 1`,
    `if [ -e /var/lib/apt/extended_states ]; then cp /var/lib/apt/extended_states ${a} || exit 1; else : > ${a}; fi`,
    `mv -f -- ${f}.part ${f}; fi`,
  ].join('\n');
}

/**
 * The exact undo data of a transaction, from dpkg before (DPKG_LIST's output) and after it; the
 * auto marks, which rollback sets again on what it reinstalls, come from the snapshot's copy.
 */
async function undoFrom(ctx: StepContext, beforeList: string, after: Record<string, DpkgEntry>): Promise<{ undo: PackageUndo; sim: SimResult }> {
  const { arch, dpkg: before } = parseDpkgList(beforeList);
  const sim = dpkgChanges(before, after, arch);
  let auto: string[] = [];
  if (sim.remv.length || sim.inst.some((i) => i.from !== undefined)) {
    const text = await ctx.readFile(posix.join(residueDir(ctx), AUTO_SNAPSHOT));
    auto = parseExtendedStates(text?.toString('utf8') ?? '', arch);
  }
  return { undo: undoOf(sim, before, auto), sim };
}

/**
 * Undo data with its lists worked out: as journaled, or (a change made with no dry run, stopped
 * before its result was journaled) from the step's snapshot and dpkg now. No snapshot: the
 * install never started, and dpkg was not changed.
 */
async function resolveUndo(ctx: StepContext, undo: PackageUndo): Promise<PackageUndo> {
  if (!undo.snapshot) return undo;
  const before = await ctx.readFile(posix.join(residueDir(ctx), SNAPSHOT));
  if (before === null) return { purge: [], remove: [], reinstall: [] };
  // Every entry, so what a stopped transaction left selected but not unpacked is cleared too.
  const now = parseDpkgList(await runOk(ctx, DPKG_LIST_ALL, `listing dpkg's packages on ${ctx.host}`, { env: APT_ENV }));
  return (await undoFrom(ctx, before.toString('utf8'), now.dpkg)).undo;
}

async function refreshLists(ctx: StepContext): Promise<void> {
  const r = await exec(ctx, updateScript());
  if (r.code !== 0) throw failure(`apt-get update failed on ${ctx.host}`, r);
}

const canonical = (u: PackageUndo | null) => JSON.stringify(u);

export const packageStep: StepType<PackageParams, PackageState, PackageUndo> = {
  type: 'package',
  schema: packageSchema,
  check: (ctx, p) => checkPackages(ctx, p),
  // apply holds apt's inputs (dpkg's status, the lists, apt's config) to the stamp the check read.
  guarded: true,
  plan: (p, s) => planPackage(p, s),
  async apply(ctx, p, plan, checked) {
    const hasPackages = p.install.length > 0 || p.remove.length > 0;
    if (!hasPackages) {
      if (refreshDue(p, checked)) await refreshLists(ctx);
      return {};
    }
    let s = checked;
    // Read again as the plan was made: with no dry run, or with one.
    const lean = plan.undo?.snapshot === true;
    if (refreshDue(p, checked) || checked.freshLists) {
      // Refreshed lists may offer other versions than the ones planned: simulate again on them.
      await refreshLists(ctx);
      s = await checkPackages(ctx, { ...p, update_cache: false }, lean);
      // The journal already holds the plan's undo: go ahead only if apt would still do exactly that.
      const now = planPackage(p, s);
      // No dry run was planned (a plain apply): the install works out its undo data from what it does.
      if (!plan.undo?.snapshot && canonical(now.undo) !== canonical(plan.undo)) {
        throw new StepError(
          `with freshly refreshed apt lists, the packages apt would change on ${ctx.host} differ from the plan (now: ${now.changed ? now.summary : 'nothing'}); nothing was installed or removed — run again to see the new plan`,
        );
      }
    }
    // apt's inputs moved since the check (someone ran apt, or dpkg), or there is no stamp to hold
    // them to: install only if what this step reads is still as planned, from a fresh read.
    const again = async () => {
      const now = await checkPackages(ctx, { ...p, update_cache: false }, lean);
      if (stateFingerprint(packageStep, p, now) !== stateFingerprint(packageStep, p, s)) {
        throw movedError(`the packages apt would change on ${ctx.host} are not as planned now: ${planPackage(p, now).summary}`);
      }
      return now;
    };
    const r = await install(ctx, p, s.inputs ? s : await again()).catch(async (e: unknown) => {
      if (!(e instanceof MovedError)) throw e;
      return install(ctx, p, await again());
    });
    if (r.code === 0) {
      const out = { stdout: r.stdout, stderr: r.stderr, ...(r.state ? { state: r.state } : {}) };
      if (!plan.undo?.snapshot) return out;
      // No dry run was made: the undo data, and what the step did, come from dpkg before and after.
      const before = r.before ?? (await ctx.readFile(posix.join(residueDir(ctx), SNAPSHOT)))?.toString('utf8');
      if (before === undefined)
        throw new StepError(
          `the packages were installed on ${ctx.host}, but the snapshot of dpkg from before the install is gone (${posix.join(residueDir(ctx), SNAPSHOT)}): what to take back cannot be told`,
        );
      const { undo, sim } = await undoFrom(ctx, before, (r.state ?? (await readState(ctx))).dpkg);
      const named = new Set([...p.install.map((x) => parseSpec(x).name), ...p.remove]);
      const did = describe(sim, named);
      return {
        ...out,
        undo,
        summary: did ? `${refreshDue(p, checked) ? `refresh apt lists (${age(checked.listsAgeS)}), then ` : ''}${did}` : plan.summary,
        ...(did ? { diff: packageDiff(sim) } : {}),
      };
    }
    const err = failure(`apt-get on ${ctx.host} failed`, r);
    // A half-done transaction is not a completed step, so the engine will not roll it back: do it here.
    try {
      const undone = plan.undo ? await rollbackPackages(ctx, plan.undo) : false;
      err.message += undone ? '; the packages it had changed were put back' : '; no package was changed';
    } catch (e) {
      err.message += `; putting back the packages it had changed failed too: ${(e as Error).message}`;
    }
    throw err;
  },
  rollback: async (ctx, _p, undo) => {
    await rollbackPackages(ctx, undo);
  },
  hostRollback: (_p, undo, env) => hostRollbackPackages(undo, env),
  // The host script puts the packages and ucf's state back; the system users their scripts added
  // need the controller's checks (files owned, processes): its rollback, safe to run again, follows.
  hostRollbackPartial: true,
  // The named packages as dpkg has them and the transaction apt would run; not the lists' age.
  stateKey: (p, s) => {
    const named = [...p.install.map((x) => parseSpec(x).name), ...p.remove].sort();
    return { dpkg: Object.fromEntries(named.map((n) => [n, s.dpkg[n] ?? null])), sim: s.sim ?? null, auto: s.auto ?? null };
  },
  undoSummary: (u) => {
    if (!Array.isArray(u.purge) && !Array.isArray(u.reinstall)) return compact(u);
    const parts = [
      names(u, 'purge').length ? `purge ${names(u, 'purge').join(' ')}` : '',
      names(u, 'remove').length ? `remove ${names(u, 'remove').join(' ')}` : '',
      Array.isArray(u.reinstall) && u.reinstall.length
        ? `reinstall ${(u.reinstall as Array<{ name?: unknown; version?: unknown }>).map((r) => `${String(r.name)}=${String(r.version)}`).join(' ')}`
        : '',
    ].filter(Boolean);
    if (!parts.length && u.snapshot === true) return "put back dpkg's packages as they were before the step (worked out from its snapshot of dpkg on the host)";
    return parts.length ? parts.join('; ') : 'nothing to put back (apt lists refreshed only)';
  },
  footprint: (p) => {
    const named = [...p.install.map((x) => parseSpec(x).name), ...p.remove];
    const reads = [...named.map((n) => `pkg:${n}`), 'apt:lists'];
    if (!named.length) return { reads, writes: ['apt:lists', 'path:/var/lib/apt/lists'] };
    // Maintainer scripts may write anywhere, add system users and groups, install services.
    return { reads, writes: [ANYTHING] };
  },
};

/**
 * Puts packages back from the undo data alone, then what their maintainer scripts left (account
 * entries, ucf's state) from the backups apply made; parts already as recorded are skipped.
 * Resolves to whether anything had to be done. Throws, after doing all it can, when something
 * stays: a version no longer available, a system user that still owns files.
 */
export async function rollbackPackages(ctx: StepContext, journaled: PackageUndo): Promise<boolean> {
  const dir = residueDir(ctx);
  const undo = await resolveUndo(ctx, journaled);
  // ucf's state as the run left it, read before the purge changes it again.
  const ucfLeft = (await exists(ctx, posix.join(dir, 'ucf.complete'))) ? await manifest(ctx, UCF_DIR) : null;
  const put = await putBackPackages(ctx, undo);
  const left: string[] = [];
  const ucf = ucfLeft === null ? false : await restoreUcf(ctx, dir, ucfLeft, left);
  const accounts = await cleanAccounts(ctx, dir, left);
  const leftovers = await cleanLeftovers(ctx, dir, left);
  const problems = [...(put.warning ? [put.warning] : []), ...(left.length ? [`rolled back the packages on ${ctx.host}, but ${left.join('; ')}`] : [])];
  if (problems.length) throw new StepError(problems.join('; '));
  return put.did || ucf || accounts || leftovers;
}

async function putBackPackages(ctx: StepContext, undo: PackageUndo): Promise<{ did: boolean; warning?: string }> {
  const { dpkg } = await readState(ctx);
  let did = false;
  // Anything dpkg still has of them goes, half-installed leftovers of a failed run included.
  const purge = undo.purge.filter((n) => dpkg[n] !== undefined && !/ not-installed$/.test(dpkg[n]!.status));
  const remove = undo.remove.filter((n) => dpkg[n] !== undefined && !/ not-installed$/.test(dpkg[n]!.status) && !hasConfigOnly(dpkg[n]));
  if (purge.length || remove.length) {
    const all = [...purge, ...remove];
    const sim = await exec(ctx, `apt-get -s -q ${APT_READ_OPTS} purge ${all.map(quote).join(' ')}`);
    if (sim.code !== 0) throw failure(`cannot plan removing ${all.join(', ')} on ${ctx.host}`, sim);
    const extra = parseSim(sim.stdout)
      .remv.map((r) => r.name)
      .filter((n) => !all.includes(n));
    if (extra.length) {
      throw new StepError(`removing ${all.join(', ')} on ${ctx.host} would also remove ${extra.join(', ')}, which this run did not install; left as is`);
    }
    for (const [verb, names] of [
      ['remove', remove],
      ['purge', purge],
    ] as const) {
      if (!names.length) continue;
      did = true;
      const r = await exec(ctx, `apt-get ${APT_WRITE_OPTS} ${verb} ${names.map(quote).join(' ')}`);
      if (r.code !== 0) throw failure(`apt-get ${verb} ${names.join(' ')} on ${ctx.host} failed`, r);
    }
  }
  if (await dropStaleSelections(ctx, [...undo.purge, ...undo.remove])) did = true;
  const reinstall = undo.reinstall.filter((x) => !(isInstalled(dpkg[x.name]) && dpkg[x.name]!.version === x.version));
  if (!reinstall.length) return { did };
  const install = (unpinned: Set<string>) =>
    exec(ctx, `apt-get ${APT_WRITE_OPTS} --allow-downgrades install ${reinstall.map((x) => quote(unpinned.has(x.name) || !x.version ? x.name : `${x.name}=${x.version}`)).join(' ')}`);
  let r = await install(new Set());
  const gone = new Set(missingVersions(r.stderr));
  if (r.code !== 0 && gone.size) r = await install(gone);
  if (r.code !== 0) throw failure(`reinstalling ${reinstall.map((x) => `${x.name}=${x.version}`).join(' ')} on ${ctx.host} failed`, r);
  const auto = reinstall.filter((x) => x.auto).map((x) => x.name);
  if (auto.length) {
    const m = await exec(ctx, `apt-mark auto ${auto.map(quote).join(' ')} >/dev/null`);
    if (m.code !== 0) throw failure(`apt-mark auto ${auto.join(' ')} on ${ctx.host} failed`, m);
  }
  if (gone.size) {
    return {
      did: true,
      warning: `reinstalled ${[...gone].join(', ')} on ${ctx.host} at apt's current version: the version removed (${reinstall
        .filter((x) => gone.has(x.name))
        .map((x) => `${x.name} ${x.version}`)
        .join(', ')}) is no longer available`,
    };
  }
  return { did: true };
}

/**
 * The packages put back by a host script alone (the lockout watchdog): what dpkg still has of
 * the purged and removed ones goes, the replaced ones come back at their version (apt's current
 * one when that is gone), then ucf's state from the step's backup.
 */
function hostRollbackPackages(undo: PackageUndo, env: HostEnv): string {
  // Only a step whose result could not be journaled has no lists; the controller's rollback follows (hostRollbackPartial).
  if (undo.snapshot) return `echo 'the packages to put back are known only from the snapshot of dpkg, which the controller reads' >&2; exit 1`;
  const env0 = Object.entries(APT_ENV)
    .map(([k, v]) => `${k}=${quote(v)}`)
    .join(' ');
  const has = (n: string) => `case "$(dpkg-query -W -f='\${Status}' ${quote(n)} 2>/dev/null)" in ''|*not-installed) false;; *) true;; esac`;
  const configOnly = (n: string) => `[ "$(dpkg-query -W -f='\${Status}' ${quote(n)} 2>/dev/null)" = 'deinstall ok config-files' ]`;
  const lines = [`export ${env0}`, 'set -e', 'p=""; r=""'];
  for (const n of undo.purge) lines.push(`if ${has(n)}; then p="$p ${n}"; fi`);
  for (const n of undo.remove) lines.push(`if ${has(n)} && ! ${configOnly(n)}; then r="$r ${n}"; fi`);
  lines.push(`if [ -n "$r" ]; then apt-get ${APT_WRITE_OPTS} remove $r; fi`, `if [ -n "$p" ]; then apt-get ${APT_WRITE_OPTS} purge $p; fi`);
  for (const x of undo.reinstall) {
    const at = `[ "$(dpkg-query -W -f='\${Status} \${Version}' ${quote(x.name)} 2>/dev/null)" = ${quote(`install ok installed ${x.version}`)} ]`;
    lines.push(`if ! ${at}; then apt-get ${APT_WRITE_OPTS} --allow-downgrades install ${quote(`${x.name}=${x.version}`)} || apt-get ${APT_WRITE_OPTS} install ${quote(x.name)}; fi`);
    if (x.auto) lines.push(`apt-mark auto ${quote(x.name)} >/dev/null`);
  }
  const dir = residueDir(env);
  const d = quote(dir);
  lines.push(`if [ -e ${d}/ucf.complete ]; then if [ -e ${d}/ucf ]; then ${restoreScript(`${dir}/ucf`, UCF_DIR)}; else rm -rf -- ${quote(UCF_DIR)}; fi; fi`);
  return lines.join('\n');
}

/**
 * A package whose unpacking failed stays in dpkg's database, selected but not installed, and apt
 * leaves it there. Deselecting, then purging it, drops the entry.
 */
async function dropStaleSelections(ctx: StepContext, names: string[]): Promise<boolean> {
  if (!names.length) return false;
  const q = await exec(ctx, `dpkg-query -W -f=${quote('${Package}\t${Status}\n')} ${names.map(quote).join(' ')} 2>/dev/null; true`);
  const stale = q.stdout
    .split('\n')
    .map((l) => l.split('\t'))
    .filter(([n, st]) => n && st && / not-installed$/.test(st) && !st.startsWith('unknown '))
    .map(([n]) => n!);
  if (!stale.length) return false;
  const list = stale.map(quote).join(' ');
  const r = await exec(ctx, dpkgWaitScript(`printf '%s purge\\n' ${list} | dpkg --set-selections && dpkg --purge ${list}`));
  if (r.code !== 0) throw failure(`clearing dpkg's leftover entries for ${stale.join(', ')} on ${ctx.host} failed`, r);
  return true;
}

/*
 * What maintainer scripts change besides the packages. dpkg's purge takes a package's files, but
 * not the system users and groups its scripts added (Debian leaves them on purpose), nor ucf's
 * rotated copies of its hashfile and registry. Before installing, apply copies the account files
 * and ucf's state into the step's backup folder (package/accounts, package/ucf), and after a
 * successful install it records what the install left (package/after). The folder follows from
 * the run's backup folder and the step's name, both in the journal, so a later undo or recover
 * finds it with no help from this run; a folder that was never made (journals of older versions,
 * a crash before apply) means there is nothing to put back.
 */

/** The step's residue backup folder on the host: <backupDir>/<step folder>/package. */
export function residueDir(ctx: Pick<StepContext, 'backupDir' | 'step' | 'runId'>): string {
  return backupPath({ backupDir: ctx.backupDir, step: ctx.step, runId: ctx.runId }, 'package');
}

async function exists(ctx: StepContext, path: string): Promise<boolean> {
  return (await ctx.exec(existsScript(path))).code === 0;
}

function manifest(ctx: StepContext, dir: string): Promise<string> {
  return runOk(ctx, treeManifestScript(dir), `listing ${dir} on ${ctx.host}`);
}

/** Shell: copies ucf's state once per step (a retried apply keeps the first copy); the account files go with backupAccountsScript. */
function backupUcfScript(ctx: Pick<StepContext, 'backupDir'>, dir: string): string {
  const d = quote(dir);
  const u = quote(UCF_DIR);
  return [
    `if [ ! -e ${d}/ucf.complete ]; then`,
    `${backupDirsScript(ctx, `${dir}/ucf.complete`)} || exit 1`,
    `rm -rf -- ${d}/ucf`,
    `if [ -e ${u} ]; then cp -a -- ${u} ${d}/ucf || { rc=$?; rm -rf -- ${d}/ucf; exit $rc; }; fi`,
    `: > ${d}/ucf.complete; fi`,
  ].join('\n');
}

/** Shell: what the install left (the account files and a listing of ucf's state), to tell later changes by others apart. */
function snapshotAfterScript(ctx: Pick<StepContext, 'backupDir'>, dir: string): string {
  const a = posix.join(dir, 'after');
  const q = quote(a);
  return [
    `rm -rf -- ${q} && ${backupDirsScript(ctx, `${a}/complete`)} || exit 1`,
    `for f in ${ACCOUNT_FILES.join(' ')}; do if [ -e /etc/$f ]; then cp -p /etc/$f ${q}/$f || exit 1; fi; done`,
    `( ${treeManifestScript(UCF_DIR)} ) > ${q}/ucf.manifest || exit 1`,
    // What the transaction made in the watched folders: a maintainer script's files dpkg does not
    // track (nginx's /var/www/html), which a purge leaves behind.
    `if [ -e ${quote(posix.join(dir, PATHS_BEFORE))} ]; then ${listPaths()} | LC_ALL=C comm -z -13 ${quote(posix.join(dir, PATHS_BEFORE))} - > ${q}/paths.new || exit 1; fi`,
    `: > ${q}/complete`,
  ].join('\n');
}

/**
 * Puts ucf's state back as it was before the install, unless it changed since the install left
 * it (`leftByRun`: its listing before the purge): then others' changes are not overwritten, and
 * that is said in `left`.
 */
async function restoreUcf(ctx: StepContext, dir: string, leftByRun: string, left: string[]): Promise<boolean> {
  const backup = posix.join(dir, 'ucf');
  const had = await exists(ctx, backup);
  const before = had ? await manifest(ctx, backup) : 'absent\n';
  if ((await manifest(ctx, UCF_DIR)) === before) return false;
  const after = await ctx.readFile(posix.join(dir, 'after', 'ucf.manifest'));
  if (after !== null && leftByRun !== after.toString('utf8') && leftByRun !== before) {
    left.push(
      `${UCF_DIR} changed after the install (another apt run?), so ucf's state was left as the purge made it instead of being put back; compare it with the copy from before the install in ${had ? backup : `${dir} (there was no ${UCF_DIR})`}`,
    );
    return false;
  }
  if (had) await restoreFromBackup(ctx, backup, UCF_DIR);
  else await runOk(ctx, `rm -rf -- ${quote(UCF_DIR)}`, `removing ${UCF_DIR} on ${ctx.host}`);
  return true;
}

export interface AddedAccount {
  name: string;
  /** uid for a user, gid for a group. */
  id: number;
  /** A user's primary gid. */
  gid?: number;
}

/**
 * Entries of a passwd or group file that are in `now` but not in `before` — and, when known, were
 * already in `after` (what the install left), so accounts others added since are not the step's.
 */
export function addedAccounts(before: string, now: string, after: string | null): AddedAccount[] {
  const old = new Set(entryNames(before));
  const made = after === null ? null : new Set(entryNames(after));
  const out: AddedAccount[] = [];
  for (const line of now.split('\n')) {
    const f = line.split(':');
    const name = f[0]!;
    if (!line || old.has(name) || (made && !made.has(name)) || out.some((a) => a.name === name)) continue;
    out.push({ name, id: Number(f[2]), ...(f[3] !== undefined && f[3] !== '' ? { gid: Number(f[3]) } : {}) });
  }
  return out;
}

export interface AccountsDecision {
  /** Per account file, the entries to drop. */
  touched: Touched;
  /** Users taken out of the member lists they joined. */
  dropMembers: string[];
  /** Accounts kept, with why. */
  kept: Array<{ kind: 'user' | 'group'; name: string; id: number; why: string }>;
}

/**
 * Which added accounts go: all but a user that still owns a file or runs a process, a group that
 * owns one, and a group still some remaining user's primary group. Pure.
 */
export function decideAccounts(users: AddedAccount[], groups: AddedAccount[], owned: Array<{ uid: number; gid: number; what: string }>, passwdNow: string): AccountsDecision {
  const kept: AccountsDecision['kept'] = [];
  const goUsers: string[] = [];
  for (const u of users) {
    const o = owned.find((x) => x.uid === u.id);
    if (o) kept.push({ kind: 'user', name: u.name, id: u.id, why: o.what.startsWith('process ') ? `${o.what} runs as it` : `it still owns ${o.what}` });
    else goUsers.push(u.name);
  }
  const gone = new Set(goUsers);
  const goGroups: string[] = [];
  for (const g of groups) {
    const o = owned.find((x) => x.gid === g.id);
    const primaryOf = passwdNow
      .split('\n')
      .map((l) => l.split(':'))
      .filter((f) => f.length > 3 && f[3] !== '' && Number(f[3]) === g.id && !gone.has(f[0]!))
      .map((f) => f[0]!);
    if (o) kept.push({ kind: 'group', name: g.name, id: g.id, why: o.what.startsWith('process ') ? `${o.what} runs with it` : `${o.what} still belongs to it` });
    else if (primaryOf.length) kept.push({ kind: 'group', name: g.name, id: g.id, why: `it is the primary group of ${primaryOf.join(', ')}` });
    else goGroups.push(g.name);
  }
  const touched: Touched = {};
  const put = (files: AccountFile[], names: string[]) => {
    if (names.length) for (const f of files) touched[f] = names;
  };
  put(['passwd', 'shadow', 'subuid', 'subgid'], goUsers);
  put(['group', 'gshadow'], goGroups);
  return { touched, dropMembers: goUsers, kept };
}

/** Removes the account entries the install added, keeping (and naming in `left`) those still in use. */
async function cleanAccounts(ctx: StepContext, dir: string, left: string[]): Promise<boolean> {
  const backup = posix.join(dir, 'accounts');
  if (!(await exists(ctx, posix.join(backup, 'complete')))) return false;
  const text = async (path: string) => (await ctx.readFile(path))?.toString('latin1') ?? '';
  const afterDir = posix.join(dir, 'after');
  const hasAfter = await exists(ctx, posix.join(afterDir, 'complete'));
  const [pwBefore, pwNow, grBefore, grNow] = await Promise.all([text(`${backup}/passwd`), text('/etc/passwd'), text(`${backup}/group`), text('/etc/group')]);
  const [pwAfter, grAfter] = hasAfter ? await Promise.all([text(`${afterDir}/passwd`), text(`${afterDir}/group`)]) : [null, null];
  const users = addedAccounts(pwBefore, pwNow, pwAfter);
  const groups = addedAccounts(grBefore, grNow, grAfter);
  if (!users.length && !groups.length) return false;
  const out = await runOk(
    ctx,
    ownersScript(
      users.map((u) => u.id),
      groups.map((g) => g.id),
      posix.dirname(ctx.backupDir),
    ),
    `looking for files and processes of ${[...users, ...groups].map((a) => a.name).join(', ')} on ${ctx.host}`,
  );
  const d = decideAccounts(users, groups, parseOwners(out), pwNow);
  if (Object.keys(d.touched).length) await restoreAccounts(ctx, { backup, touched: d.touched }, { dropMembers: d.dropMembers });
  if (d.kept.length) {
    const what = d.kept.map((k) => `${k.kind} ${k.name} (${k.kind === 'user' ? 'uid' : 'gid'} ${k.id}): ${k.why}`).join(', ');
    const cmds = d.kept.map((k) => `${k.kind === 'user' ? 'deluser' : 'delgroup'} --system ${k.name}`).join('; ');
    left.push(`kept what the packages' scripts added and is still in use — ${what}. Remove or re-own what they own if nothing needs it, then remove them by hand (${cmds})`);
  }
  return Object.keys(d.touched).length > 0;
}

/**
 * Folders where maintainer scripts make files dpkg does not track and a purge leaves (a default web
 * page, a config made at install). Not /var/lib, /var/log or /var/cache: they churn by themselves.
 */
const LEFTOVER_DIRS = ['/etc', '/var/www', '/srv', '/opt', '/usr/local'];
const PATHS_BEFORE = 'paths.before';

/** Shell: every path under the watched folders, NUL-separated, sorted as comm wants them. */
function listPaths(): string {
  return `find ${LEFTOVER_DIRS.join(' ')} -xdev -print0 2>/dev/null | LC_ALL=C sort -z`;
}

/** Shell: the listing before the install, taken once per step (a retried apply keeps the first). */
function pathsBeforeScript(dir: string): string {
  const f = quote(posix.join(dir, PATHS_BEFORE));
  return `if [ ! -e ${f} ]; then { ${listPaths()}; } > ${f}.part && mv -f -- ${f}.part ${f} || exit 1; fi`;
}

/**
 * After the purge: what the transaction made in the watched folders and the purge left goes,
 * deepest first — a file or link only when not changed since the install and owned by no package,
 * a folder only when empty. What was changed since is kept and said in `left`.
 */
async function cleanLeftovers(ctx: StepContext, dir: string, left: string[]): Promise<boolean> {
  const after = posix.join(dir, 'after');
  // $0 is the folder of what the install left; the paths come as arguments, deepest first.
  const each = [
    'for p; do',
    '  if [ -L "$p" ] || [ -f "$p" ]; then',
    '    s="$0/complete"; [ -e "$0/paths.stamp" ] && s="$0/paths.stamp"',
    '    if [ -n "$(find "$p" -maxdepth 0 -newer "$s")" ]; then printf "changed %s\\n" "$p"; continue; fi',
    '    if dpkg-query -S "$p" >/dev/null 2>&1; then continue; fi',
    '    rm -f -- "$p" && printf "removed %s\\n" "$p"',
    '  elif [ -d "$p" ]; then',
    '    if dpkg-query -S "$p" >/dev/null 2>&1; then continue; fi',
    '    rmdir -- "$p" 2>/dev/null && printf "removed %s\\n" "$p"',
    '  fi',
    'done',
    'exit 0',
  ].join('\n');
  // The install's own exec may have died before it recorded what it made (its controller killed
  // mid-transaction, apt finishing alone): then what is there now and was not before is its.
  const before = quote(posix.join(dir, PATHS_BEFORE));
  const script = [
    `a=${quote(after)}`,
    `if [ ! -e "$a/complete" ] && [ ! -e "$a/paths.stamp" ] && [ -e ${before} ]; then mkdir -p -- "$a" && : > "$a/paths.stamp" && ${listPaths()} | LC_ALL=C comm -z -13 ${before} - > "$a/paths.new" || exit 1; fi`,
    '[ -s "$a/paths.new" ] || exit 0',
    `LC_ALL=C sort -z -r "$a/paths.new" | xargs -0 -r sh -c ${quote(each)} "$a"`,
  ].join('\n');
  const out = await runOk(ctx, script, `removing what the packages' scripts left in ${LEFTOVER_DIRS.join(', ')} on ${ctx.host}`);
  const changed = out
    .split('\n')
    .filter((l) => l.startsWith('changed '))
    .map((l) => l.slice(8));
  if (changed.length) left.push(`kept what the packages' scripts made and was changed since the install: ${changed.join(', ')}`);
  return out.includes('removed ');
}
