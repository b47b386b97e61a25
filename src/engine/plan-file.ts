/**
 * Saved plans on disk: made from a plan run, read back with their format checked, and compared
 * with what an apply would use now (recipe, sources, vars, targets, version) before any host is
 * contacted. Every difference is named; any one refuses the apply (exit 2).
 */
import { chmod, lstat, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { InputError, type InputIssue } from '../errors.js';
import type { Recipe } from '../recipe/types.js';
import { sha256 } from '../steps/step.js';
import { version } from '../version.js';
import type { HostTarget, RunReport } from './fleet.js';
import type { Masker } from './mask.js';
import { PLAN_FORMAT, PLAN_VERSION, planValueSchema, varDigest, type PlanValue } from './plan-value.js';

/** Every recipe file the recipe was loaded from: the recipe and what it includes. */
export function recipeFiles(recipe: Recipe): string[] {
  const files = new Set<string>([recipe.file]);
  for (const s of [...recipe.steps, ...recipe.handlers]) files.add(s.loc.file);
  return [...files];
}

async function digestOf(file: string): Promise<string | undefined> {
  try {
    return `sha256:${sha256(await readFile(file))}`;
  } catch {
    return undefined;
  }
}

export interface PlanInputs {
  recipe: Recipe;
  targets: HostTarget[];
  salt: string;
  /** Vars given on the command line and in a vars file, by name; secrets are left out. */
  given: { cli: Record<string, string>; file: Record<string, unknown> };
  /** Names of the vars that are secret (their values are never in the plan). */
  secret: string[];
  /** The target options the plan was made with, so `apply --plan` alone reaches the same hosts. */
  options: Record<string, unknown>;
}

export async function makePlanValue(report: RunReport, i: PlanInputs): Promise<PlanValue> {
  const sources: Record<string, string> = {};
  for (const f of recipeFiles(i.recipe).slice(1)) sources[f] = (await digestOf(f)) ?? '';
  Object.assign(sources, report.sources);
  return {
    format: PLAN_FORMAT,
    version: PLAN_VERSION,
    hostsmith: version(),
    createdAt: new Date().toISOString(),
    runId: report.runId,
    recipe: { name: i.recipe.name, file: i.recipe.file, sha256: (await digestOf(i.recipe.file)) ?? '' },
    sources,
    salt: i.salt,
    vars: { ...i.given, secret: i.secret },
    options: i.options,
    status: report.status,
    exitCode: report.exitCode,
    hosts: Object.fromEntries(
      i.targets.map((t) => {
        const h = report.hosts[t.name]!;
        return [
          t.name,
          {
            target: reachOf(t),
            vars: h.vars ?? {},
            status: h.status,
            ...(h.error ? { error: h.error } : {}),
            steps: h.steps ?? [],
          },
        ];
      }),
    ),
  };
}

/** How a host is reached, as far as a plan cares: no key material, no vars. */
function reachOf(t: HostTarget): Record<string, unknown> {
  const d = t.describe ?? {};
  const pick = (k: string) => (d[k] === undefined ? {} : { [k]: d[k] });
  return { ...pick('kind'), ...pick('host'), ...pick('port'), ...pick('user') };
}

/** Written for its owner only (it names hosts and shows diffs), secrets masked. */
/** A link at --out would have the plan (hosts, diffs) written wherever it points: refused, before any host is read too. */
export async function checkPlanOut(file: string): Promise<void> {
  const at = await lstat(file).catch(() => undefined);
  if (at?.isSymbolicLink()) throw new InputError([{ file, message: '--out is a symbolic link: not writing the plan through it (give the path of a regular file); nothing was contacted' }]);
  if (at && !at.isFile()) throw new InputError([{ file, message: '--out is not a regular file; nothing was contacted' }]);
}

export async function writePlanFile(file: string, plan: PlanValue, masker: Masker): Promise<void> {
  await checkPlanOut(file);
  // Written beside it and renamed into place: a link made meanwhile is replaced, not followed.
  const tmp = `${file}.${process.pid}.${Date.now()}.tmp`;
  try {
    await writeFile(tmp, JSON.stringify(masker.value(plan), null, 2) + '\n', { mode: 0o600, flag: 'wx' });
    await chmod(tmp, 0o600);
    await rename(tmp, file);
  } catch (e) {
    await unlink(tmp).catch(() => {});
    throw e;
  }
}

export async function readPlanFile(file: string): Promise<PlanValue> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new InputError([{ file, message: `cannot read the plan: ${(e as Error).message}` }]);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new InputError([{ file, message: `not a hostsmith plan (not JSON: ${(e as Error).message}); make one with \`hostsmith plan <recipe> --out ${file}\`` }]);
  }
  const format = (json as { format?: unknown })?.format;
  if (format !== PLAN_FORMAT) throw new InputError([{ file, message: `not a hostsmith plan (no "format": "${PLAN_FORMAT}")` }]);
  const v = (json as { version?: unknown }).version;
  if (v !== PLAN_VERSION) throw new InputError([{ file, message: `plan format version ${String(v)} is not the one this hostsmith reads (${PLAN_VERSION}); make a new plan` }]);
  const parsed = planValueSchema.safeParse(json);
  if (!parsed.success) {
    throw new InputError(parsed.error.issues.map((i) => ({ file, path: i.path.join('.'), message: `${i.message} (the plan file was edited or is damaged; make a new plan)` })));
  }
  return parsed.data;
}

/**
 * What differs between the plan and what this apply would use. Empty: the plan may be applied.
 * `secretsGiven` names the secret vars given again: one that was not is called missing, not
 * "different" (a saved plan never holds a secret, so each must be given anew).
 */
export async function planInputDifferences(plan: PlanValue, now: { recipe: Recipe; targets: HostTarget[] }, file: string, secretsGiven?: ReadonlySet<string>): Promise<InputIssue[]> {
  const out: string[] = [];
  if (plan.hostsmith !== version()) out.push(`made by hostsmith ${plan.hostsmith}, this is ${version()}: make a new plan with this version`);
  const recipeNow = await digestOf(now.recipe.file);
  if (recipeNow !== plan.recipe.sha256) out.push(`the recipe ${now.recipe.file} is not the one planned (${plan.recipe.file}): its content differs`);
  for (const [src, digest] of Object.entries(plan.sources)) {
    const d = await digestOf(src);
    if (d === undefined) out.push(`source ${src} is gone`);
    else if (d !== digest) out.push(`source ${src} changed since the plan was made`);
  }
  const planned = Object.keys(plan.hosts);
  const names = now.targets.map((t) => t.name);
  const missing = planned.filter((n) => !names.includes(n));
  const extra = names.filter((n) => !planned.includes(n));
  if (missing.length) out.push(`hosts in the plan but not targeted now: ${missing.join(', ')}`);
  if (extra.length) out.push(`hosts targeted now but not in the plan: ${extra.join(', ')}`);
  // A secret the recipe gives a default for is taken from it again (the recipe's digest is checked
  // above, and the per-host digests below catch a value that is not the one planned).
  const missingSecrets = secretsGiven ? plan.vars.secret.filter((n) => !secretsGiven.has(n) && now.recipe.vars[n]?.default === undefined) : [];
  if (missingSecrets.length) {
    out.push(
      `secret var${missingSecrets.length > 1 ? 's' : ''} ${missingSecrets.join(', ')} missing: a saved plan never holds a secret's value; give ${missingSecrets.length > 1 ? 'them' : 'it'} again with --var ${missingSecrets[0]}=… or --vars-file (checked against the plan's digest)`,
    );
  }
  for (const t of now.targets) {
    const h = plan.hosts[t.name];
    if (!h) continue;
    const reach = reachOf(t);
    for (const k of new Set([...Object.keys(reach), ...Object.keys(h.target)])) {
      if (JSON.stringify(reach[k]) !== JSON.stringify(h.target[k])) out.push(`host ${t.name}: ${k} is ${JSON.stringify(reach[k])}, the plan has ${JSON.stringify(h.target[k])}`);
    }
    for (const name of new Set([...Object.keys(t.vars), ...Object.keys(h.vars)])) {
      if (missingSecrets.includes(name)) continue;
      if (!(name in h.vars)) out.push(`host ${t.name}: var ${name} is not in the plan`);
      else if (!(name in t.vars)) out.push(`host ${t.name}: var ${name} is in the plan but has no value now`);
      else if (varDigest(plan.salt, name, t.vars[name]) !== h.vars[name]) {
        out.push(`host ${t.name}: var ${name} differs from the value planned${plan.vars.secret.includes(name) ? ' (a secret: give the same value again)' : ''}`);
      }
    }
  }
  return out.map((message) => ({ file, message }));
}
