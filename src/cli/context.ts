/**
 * What every run command does before touching a host: load the recipe, inventory and vars,
 * resolve targets and vars per host. Any problem here is exit 2 and no host is contacted.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { homedir } from 'node:os';
import { InputError } from '../errors.js';
import type { HostTarget } from '../engine/fleet.js';
import { loadRecipe } from '../recipe/load.js';
import type { Recipe } from '../recipe/types.js';
import { loadVarsFile, missingPromptVars, parseVarArgs, resolveVars } from '../recipe/vars.js';
import type { ShellTransport } from '../transport/base.js';
import { LocalTransport } from '../transport/local.js';
import type { SshTarget } from '../transport/ssh.js';
import { loadInventory, resolveTargets, type TargetSpec } from '../transport/targets.js';
import { defaultStateDir, loadConfig, type Config } from './config.js';
import { MIN_SAFE_SECRET, secretPieces } from '../engine/mask.js';
import { fleetOptions, type FleetOptions } from '../engine/batches.js';
import { DURATION_HINT, parseDuration } from '../duration.js';

export interface GlobalOptions {
  json?: boolean;
  stateDir?: string;
  color?: boolean;
  verbose?: boolean;
}

export interface TargetCliOptions {
  hosts?: string;
  limit?: string;
  inventory?: string;
  identity?: string;
  knownHosts?: string;
  acceptNewHostKeys?: boolean;
  sudo?: boolean;
  concurrency?: string;
  /** Fleet options (SPEC §12, apply; plan checks and keeps them): `n` or `n%`, and host|batch|fleet. */
  batch?: string;
  maxFail?: string;
  rollbackScope?: string;
  /** Lockout protection (SPEC §12): how long each host's watchdog waits for the confirmation. */
  confirm?: string;
  var?: string[];
  varsFile?: string;
  /** The non-secret vars a saved plan was made with (apply --plan). */
  planVars?: GivenVars;
}

export interface GivenVars {
  cli: Record<string, string>;
  file: Record<string, unknown>;
}

function notSecret<T>(recipe: Recipe, vars: Record<string, T>): Record<string, T> {
  return Object.fromEntries(Object.entries(vars).filter(([k]) => !recipe.vars[k]?.secret));
}

export interface Prepared {
  recipe: Recipe;
  targets: HostTarget[];
  specs: TargetSpec[];
  secrets: string[];
  /** Said on stderr before the run: secrets too short to mask without hiding other text. */
  warnings: string[];
  config: Config;
  stateDir: string;
  concurrency: number;
  /** --batch, --max-fail, --rollback-scope, checked and worked out for the targets. */
  fleet: FleetOptions;
  /** --confirm; else the recipe's defaults.confirm applies. */
  confirmMs?: number;
  cliVars: Record<string, string>;
  /** Vars given on the command line and in a vars file, secrets left out: what a saved plan keeps. */
  given: GivenVars;
  close(): Promise<void>;
}

export function stateDirOf(g: GlobalOptions, config: Config = loadConfig()): string {
  return resolve(g.stateDir ?? config.stateDir ?? defaultStateDir());
}

export async function prepare(
  recipeFile: string,
  o: TargetCliOptions & GlobalOptions,
  ask?: (recipe: Recipe, missing: ReturnType<typeof missingPromptVars>) => Promise<Record<string, string>>,
  /** A person is at a terminal: an --identity key locked by a passphrase is unlocked by asking for it. */
  how: { askPassphrase?: boolean } = {},
): Promise<Prepared> {
  const config = loadConfig();
  const concurrency = o.concurrency !== undefined ? Number(o.concurrency) : (config.concurrency ?? 10);
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new InputError(`--concurrency: "${o.concurrency}" is not a whole number ≥ 1`);
  const recipe = await loadRecipe(resolve(recipeFile));
  const inventoryFile = o.inventory ?? config.inventory;
  const inventory = inventoryFile ? await loadInventory(resolve(inventoryFile)) : undefined;
  // A saved plan's non-secret vars stay, with what is given now on top (the secrets, given again):
  // a value that differs from the plan's is then refused as a difference, not silently dropped.
  const fromPlan = o.planVars;
  const givenFile = o.varsFile ? await loadVarsFile(resolve(o.varsFile)) : undefined;
  const fileVars = fromPlan || givenFile ? { ...(fromPlan?.file ?? {}), ...(givenFile ?? {}) } : undefined;
  const cliVars = { ...(fromPlan?.cli ?? {}), ...parseVarArgs(o.var ?? []) };
  // Key file → the passphrase typed for it: in memory only, handed to ssh2 and to nothing else.
  const passphrases = new Map<string, string>();
  const passphrase = o.identity ? await checkIdentity(o.identity, how.askPassphrase === true) : undefined;
  if (passphrase !== undefined) passphrases.set(resolve(o.identity!), passphrase);
  const specs = resolveTargets({ hosts: o.hosts, limit: o.limit, inventory, identity: cliIdentity(o.identity), sudo: o.sudo ?? config.sudo });
  const fleet = fleetOptions(o, specs.length);
  const confirmMs = o.confirm === undefined ? undefined : parseDuration(o.confirm);
  if (o.confirm !== undefined && !confirmMs) throw new InputError(`--confirm: "${o.confirm}" is not a duration above zero: ${DURATION_HINT} (nothing was contacted or changed)`);

  if (ask) {
    // Ask for what no source gives: prompt vars, and required vars without a value anywhere.
    const given: Record<string, unknown> = { ...fileVars, ...cliVars };
    const missing = missingPromptVars(recipe, given).filter((v) => specs.every((s) => s.vars[v.name] === undefined));
    if (missing.length) Object.assign(cliVars, await ask(recipe, missing));
  }

  const secrets = new Set<string>();
  const perHost = specs.map((s) => {
    const r = resolveVars(recipe, { cli: cliVars, file: fileVars, inventory: s.vars });
    r.secrets.forEach((x) => secrets.add(x));
    return r.values;
  });

  const knownHostsFile = resolve(o.knownHosts ?? config.knownHosts ?? `${homedir()}/.ssh/known_hosts`);
  const acceptNew = o.acceptNewHostKeys ?? config.acceptNewHostKeys ?? false;
  const open: ShellTransport[] = [];
  const targets: HostTarget[] = specs.map((s, i) => {
    let conn: Promise<ShellTransport> | undefined;
    const openTarget = async (): Promise<ShellTransport> =>
      s.kind === 'local'
        ? new LocalTransport(s.name)
        : // ssh2 is loaded only when a host is reached over SSH (start-up time).
          await (await import('../transport/ssh.js')).SshTransport.connect(sshTarget(s, knownHostsFile, acceptNew, passphrases));
    return {
      name: s.name,
      vars: perHost[i]!,
      sudo: s.sudo,
      describe: { ...s, vars: undefined, knownHostsFile },
      connect: () => {
        conn ??= (async () => {
          const t = await openTarget();
          open.push(t);
          return t;
        })();
        return conn;
      },
      connectFresh: openTarget,
    };
  });
  return {
    recipe,
    targets,
    specs,
    secrets: [...secrets],
    warnings: shortSecretWarnings(recipe, perHost),
    config,
    stateDir: stateDirOf(o, config),
    concurrency,
    fleet,
    ...(confirmMs ? { confirmMs } : {}),
    cliVars,
    given: { cli: notSecret(recipe, cliVars), file: notSecret(recipe, fileVars ?? {}) },
    close: async () => {
      await Promise.all(open.map((t) => t.close().catch(() => {})));
    },
  };
}

function sshTarget(s: TargetSpec, knownHostsFile: string, acceptNewHostKeys: boolean, passphrases: ReadonlyMap<string, string>): SshTarget {
  return {
    name: s.name,
    host: s.host,
    port: s.port,
    user: s.user,
    identities: s.identities,
    knownHostsFile,
    acceptNewHostKeys,
    ...(passphrases.size ? { passphrases } : {}),
    ...(s.jump ? { jump: sshTarget(s.jump, knownHostsFile, acceptNewHostKeys, passphrases) } : {}),
  };
}

function leaves(v: unknown): string[] {
  if (v === null || v === undefined) return [];
  if (Array.isArray(v)) return v.flatMap(leaves);
  if (typeof v === 'object') return Object.values(v).flatMap(leaves);
  return [String(v)];
}

/**
 * A secret of a character or two ("0", ":") is masked wherever it appears, so output and the
 * journal lose those characters in unrelated places too. Named by var, never by value.
 */
export function shortSecretWarnings(recipe: Pick<Recipe, 'vars'>, perHost: Array<Record<string, unknown>>): string[] {
  const out: string[] = [];
  for (const [name, spec] of Object.entries(recipe.vars)) {
    if (!spec.secret) continue;
    const pieces = perHost.flatMap((values) => leaves(values[name])).flatMap(secretPieces);
    if (pieces.some((p) => p.length < MIN_SAFE_SECRET)) {
      out.push(
        `warning: the secret var "${name}" has a value (or a line of one) shorter than ${MIN_SAFE_SECRET} characters: it is masked as *** wherever it appears, so output, plan files and the journal also lose those characters in unrelated text (paths, names, numbers inside messages). Use a longer secret to avoid this.`,
      );
    }
  }
  return out;
}

/**
 * --identity names a private key SSH can use now: not a public key (a common slip, which the
 * server would only answer with "authentication failed"), and not a key locked by a passphrase
 * when no ssh-agent holds it, unless a person at a terminal types the passphrase (checked here by
 * unlocking the key, asked again until it does). Said before any connection. Returns the passphrase.
 */
async function checkIdentity(file: string, askPassphrase: boolean): Promise<string | undefined> {
  if (!existsSync(file)) throw new InputError(`--identity: no such key file ${file}`);
  const bytes = await readFile(file);
  const { utils } = (await import('ssh2')).default;
  const parsed = utils.parseKey(bytes);
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  if (key instanceof Error) {
    if (/passphrase/i.test(key.message)) {
      if (process.env.SSH_AUTH_SOCK) return undefined; // the agent may hold it: the connection tries the agent first
      if (!askPassphrase)
        throw new InputError(`--identity: ${file} is encrypted (it has a passphrase) and no ssh-agent is running: add it to an agent (eval "$(ssh-agent)"; ssh-add ${file}) and run again`);
      const { askSecret } = await import('./prompt.js');
      return askSecret(`Passphrase for ${file}`, (pw) => {
        if (!pw) return 'type the passphrase (Ctrl-C stops; nothing was contacted or changed)';
        return utils.parseKey(bytes, pw) instanceof Error ? `wrong passphrase for ${file}: try again (Ctrl-C stops; nothing was contacted or changed)` : true;
      });
    }
    throw new InputError(`--identity: ${file} is not an SSH private key hostsmith can read (${key.message})`);
  }
  if (key && !key.isPrivateKey()) {
    const priv = file.endsWith('.pub') ? file.slice(0, -4) : undefined;
    throw new InputError(`--identity: ${file} is a public key; give the private key${priv && existsSync(priv) ? ` (${priv})` : ''}`);
  }
  return undefined;
}

/** A key named on the command line is relative to where the command runs, not to the inventory's folder. */
export function cliIdentity(file: string | undefined, cwd = process.cwd()): string | undefined {
  return file && !file.startsWith('~') ? resolve(cwd, file) : file;
}
