import { z } from 'zod';
import { StepError } from '../errors.js';
import { DURATION_HINT, parseDuration } from '../recipe/duration.js';
import { unifiedDiff } from '../render/diff.js';
import { quote } from '../transport/shell.js';
import { tail, type Plan, type StepContext, type StepType } from './step.js';
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
  type DpkgEntry,
  type PkgSpec,
  type SimResult,
} from './apt.js';

const NAME_RULE = 'not a valid Debian package name (lower-case letters, digits, + - . ; at least 2 characters)';
const pkgName = z.string().refine((s) => PKG_NAME_RE.test(s), (s) => ({ message: `"${s}": ${NAME_RULE}` }));
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
    update_cache: z.boolean().default(false),
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
}

export interface PackageUndo {
  /** Installed by the step, unknown to dpkg before: purged on rollback. */
  purge: string[];
  /** Installed by the step over leftover config files: removed (config kept) on rollback. */
  remove: string[];
  /** Removed, upgraded or downgraded by the step: reinstalled at this version on rollback. */
  reinstall: Array<{ name: string; version: string; auto: boolean }>;
}

interface Pending {
  install: PkgSpec[];
  remove: string[];
}

function pending(p: PackageParams, dpkg: Record<string, DpkgEntry>): Pending {
  return {
    install: p.install.map(parseSpec).filter((s) => !isInstalled(dpkg[s.name]) || (s.version !== undefined && dpkg[s.name]!.version !== s.version)),
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
    const deps = fresh.filter((i) => !named.has(i.name)).map((i) => i.name).sort();
    parts.push(`install ${list(own)}${deps.length ? `${own.length ? ' + ' : ''}dependencies ${list(deps)}` : ''}`);
  }
  if (changedVersions.length) parts.push(`change ${list(changedVersions.map((i) => `${i.name} ${i.from} → ${i.version}`))}`);
  if (sim.remv.length) {
    const own = sim.remv.filter((r) => named.has(r.name)).map((r) => r.name);
    const deps = sim.remv.filter((r) => !named.has(r.name)).map((r) => r.name).sort();
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
  if (!s.sim) throw new Error('package: a transaction is pending but the check did not simulate it');
  if (!s.sim.inst.length && !s.sim.remv.length) return { changed: false, summary: `${wantedSummary(p)} (already satisfied)`, undo: null };
  const named = new Set([...p.install.map((x) => parseSpec(x).name), ...p.remove]);
  const refresh = due || s.freshLists ? `refresh apt lists (${age(s.listsAgeS)}), then ` : '';
  return {
    changed: true,
    summary: `${refresh}${describe(s.sim, named)}`,
    diff: packageDiff(s.sim),
    undo: undoOf(s.sim, s.dpkg, s.auto ?? []),
  };
}

async function exec(ctx: StepContext, cmd: string) {
  return ctx.exec(cmd, { env: APT_ENV });
}

function failure(what: string, r: { code: number; stderr: string; stdout: string }): StepError {
  const said = [...dpkgErrors(`${r.stdout}\n${r.stderr}`), ...aptErrors(r.stderr)].join('\n') || tail(r.stderr, 15) || tail(r.stdout, 15);
  const hint = /are you root\?/.test(r.stderr) ? ' (apt needs root: log in as root or use sudo: true / --sudo)' : '';
  return new StepError(`${what} (exit ${r.code})${said ? `: ${said}` : ''}${hint}`, { code: r.code, stderr: r.stderr });
}

async function readState(ctx: StepContext): Promise<Pick<PackageState, 'dpkg' | 'listsAgeS'>> {
  const r = await exec(ctx, stateScript());
  if (r.code !== 0) throw failure(`cannot read the installed packages on ${ctx.host}`, r);
  return splitState(r.stdout);
}

async function simulate(ctx: StepContext, p: PackageParams, todo: Pending, freshLists: boolean) {
  const r = await exec(ctx, simulateScript(transactionArgs(todo.install, todo.remove), freshLists));
  if (r.code === 0) return { ...splitSim(r.stdout), freshLists };
  const unknown = unknownPackages(r.stderr);
  if (unknown.length && p.update_cache && !freshLists) return simulate(ctx, p, todo, true);
  if (unknown.length) {
    const hint = p.update_cache ? '' : ', or refresh the apt lists with update_cache: true';
    throw new StepError(
      `package${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')} unknown to apt on ${ctx.host}${freshLists ? ' (even with freshly downloaded lists)' : ''} (${aptErrors(r.stderr).join(' ')}) — check the name${hint}`,
      { code: r.code, stderr: r.stderr },
    );
  }
  throw failure(`apt on ${ctx.host} cannot plan installing ${todo.install.map((s) => s.name).join(', ') || '-'} / removing ${todo.remove.join(', ') || '-'}`, r);
}

async function checkPackages(ctx: StepContext, p: PackageParams): Promise<PackageState> {
  const base = await readState(ctx);
  const todo = pending(p, base.dpkg);
  if (!todo.install.length && !todo.remove.length) return base;
  // With no lists at all there is nothing to simulate against: use fresh ones if we may refresh.
  const sim = await simulate(ctx, p, todo, p.update_cache && base.listsAgeS === null);
  return { ...base, ...sim };
}

async function refreshLists(ctx: StepContext): Promise<void> {
  const r = await exec(ctx, updateScript());
  if (r.code !== 0) throw failure(`apt-get update failed on ${ctx.host}`, r);
}

const canonical = (u: PackageUndo | null) => JSON.stringify(u);

export const packageStep: StepType<PackageParams, PackageState, PackageUndo> = {
  type: 'package',
  schema: packageSchema,
  check: checkPackages,
  plan: (p, s) => planPackage(p, s),
  async apply(ctx, p, plan, checked) {
    const hasPackages = p.install.length > 0 || p.remove.length > 0;
    if (!hasPackages) {
      if (refreshDue(p, checked)) await refreshLists(ctx);
      return {};
    }
    let s = checked;
    if (refreshDue(p, checked) || checked.freshLists) {
      // Refreshed lists may offer other versions than the ones planned: simulate again on them.
      await refreshLists(ctx);
      s = await checkPackages(ctx, { ...p, update_cache: false });
      // The journal already holds the plan's undo: go ahead only if apt would still do exactly that.
      const now = planPackage(p, s);
      if (canonical(now.undo) !== canonical(plan.undo)) {
        throw new StepError(
          `with freshly refreshed apt lists, the packages apt would change on ${ctx.host} differ from the plan (now: ${now.changed ? now.summary : 'nothing'}); nothing was installed or removed — run again to see the new plan`,
        );
      }
    }
    const go = pending(p, s.dpkg);
    const r = await exec(ctx, `apt-get ${APT_WRITE_OPTS} --allow-downgrades install ${transactionArgs(go.install, go.remove)}`);
    if (r.code === 0) return { stdout: r.stdout, stderr: r.stderr };
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
  // The named packages as dpkg has them and the transaction apt would run; not the lists' age.
  stateKey: (p, s) => {
    const named = [...p.install.map((x) => parseSpec(x).name), ...p.remove].sort();
    return { dpkg: Object.fromEntries(named.map((n) => [n, s.dpkg[n] ?? null])), sim: s.sim ?? null, auto: s.auto ?? null };
  },
  resources: (p) => {
    const named = [...p.install.map((x) => parseSpec(x).name), ...p.remove];
    const reads = [...named.map((n) => `pkg:${n}`), 'apt:lists'];
    if (!named.length) return { reads, writes: ['apt:lists'] };
    // Maintainer scripts may write anywhere, add system users and groups, install services.
    return { reads, writes: ['apt:lists', 'pkg:*', 'path:*', 'user:*', 'group:*', 'service:*'] };
  },
};

/**
 * Puts packages back from the undo data alone; parts already as recorded are skipped.
 * Resolves to whether anything had to be done.
 */
export async function rollbackPackages(ctx: StepContext, undo: PackageUndo): Promise<boolean> {
  const { dpkg } = await readState(ctx);
  let did = false;
  // Anything dpkg still has of them goes, half-installed leftovers of a failed run included.
  const purge = undo.purge.filter((n) => dpkg[n] !== undefined && !/ not-installed$/.test(dpkg[n]!.status));
  const remove = undo.remove.filter((n) => dpkg[n] !== undefined && !/ not-installed$/.test(dpkg[n]!.status) && !hasConfigOnly(dpkg[n]));
  if (purge.length || remove.length) {
    const all = [...purge, ...remove];
    const sim = await exec(ctx, `apt-get -s -q ${APT_READ_OPTS} purge ${all.map(quote).join(' ')}`);
    if (sim.code !== 0) throw failure(`cannot plan removing ${all.join(', ')} on ${ctx.host}`, sim);
    const extra = parseSim(sim.stdout).remv.map((r) => r.name).filter((n) => !all.includes(n));
    if (extra.length) {
      throw new StepError(`removing ${all.join(', ')} on ${ctx.host} would also remove ${extra.join(', ')}, which this run did not install; left as is`);
    }
    for (const [verb, names] of [['remove', remove], ['purge', purge]] as const) {
      if (!names.length) continue;
      did = true;
      const r = await exec(ctx, `apt-get ${APT_WRITE_OPTS} ${verb} ${names.map(quote).join(' ')}`);
      if (r.code !== 0) throw failure(`apt-get ${verb} ${names.join(' ')} on ${ctx.host} failed`, r);
    }
  }
  if (await dropStaleSelections(ctx, [...undo.purge, ...undo.remove])) did = true;
  const reinstall = undo.reinstall.filter((x) => !(isInstalled(dpkg[x.name]) && dpkg[x.name]!.version === x.version));
  if (!reinstall.length) return did;
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
    throw new StepError(
      `reinstalled ${[...gone].join(', ')} on ${ctx.host} at apt's current version: the version removed (${reinstall
        .filter((x) => gone.has(x.name))
        .map((x) => `${x.name} ${x.version}`)
        .join(', ')}) is no longer available`,
    );
  }
  return true;
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
