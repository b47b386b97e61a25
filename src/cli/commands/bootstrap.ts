/**
 * `bootstrap [recipe]` (SPEC §10): a person at a terminal, a new server, and questions with a
 * default at each: the host, how to log in, whether to trust its host key, the recipe, its vars.
 * Then the same plan → show → confirm → apply as a terminal `apply`, and an offer to save the
 * host to the inventory. A password is used once, to install the person's public key; it is
 * never stored, logged, journaled or put in a process's arguments.
 */
import { existsSync } from 'node:fs';
import { homedir, userInfo } from 'node:os';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { ConnectError, HostsmithError, InputError, errorMessage } from '../../errors.js';
import { loadRecipe } from '../../recipe/load.js';
import type { Recipe } from '../../recipe/types.js';
import { convertVar } from '../../recipe/vars.js';
import { addHostToInventory, type InventoryHostEntry } from '../../transport/inventory-write.js';
import { appendKnownHost, fingerprintMessage, knownHostName } from '../../transport/known-hosts.js';
import { presentedHostKey, SshTransport, type SshTarget } from '../../transport/ssh.js';
import { loadInventory, parseAddress, resolveTargets, type Inventory, type TargetSpec } from '../../transport/targets.js';
import { displayPath } from '../../yaml.js';
import { checkPrivateKey, installAuthorizedKey, readPublicKey, type PublicKey } from '../bootstrap/authorized-key.js';
import { hostSuggestions, recipeChoices, sshConfigUser } from '../bootstrap/choices.js';
import { loadConfig } from '../config.js';
import { prepare, type GlobalOptions } from '../context.js';
import { escapeText } from '../escape.js';
import type { Output } from '../output.js';
import { askPick, askSecret, askText, askVarValue, askWithSuggestions, askYesNo, interactive } from '../prompt.js';
import { outputFor, type Ctx } from '../shared.js';
import { runPrepared } from './run.js';

interface BootstrapCli extends GlobalOptions {
  inventory?: string;
  identity?: string;
  knownHosts?: string;
}

type Login = 'agent' | 'key' | 'password';

const one = (s: unknown) => escapeText(String(s));
const home = (p: string) => (p === homedir() || p.startsWith(`${homedir()}/`) ? `~${p.slice(homedir().length)}` : p);

/** Where the answer leads: the resolved target, and the --hosts text that names it. */
interface Chosen {
  hosts: string;
  spec: TargetSpec;
  fromInventory: boolean;
}

function hostProblem(s: string, inventory: Inventory | undefined): true | string {
  if (!s) return 'type a host: [user@]host[:port], or one of the names below';
  if (/[\s,]/.test(s)) return 'one host only, without spaces or commas: [user@]host[:port]';
  if (s === 'local') return 'bootstrap sets up a server over SSH; for this machine use `hostsmith apply <recipe> --hosts local`';
  if (inventory?.hosts && Object.prototype.hasOwnProperty.call(inventory.hosts, s)) return true;
  try {
    parseAddress(s);
    return true;
  } catch {
    return `"${s}" is not [user@]host[:port] (e.g. root@203.0.113.10 or 203.0.113.10:2222)`;
  }
}

/**
 * The target for an answer. A new server is set up as root unless a user is typed or
 * ~/.ssh/config names one (the inventory's own user applies to its hosts).
 */
function chooseTarget(answer: string, inventory: Inventory | undefined, sshConfigFile: string, identity: string | undefined): Chosen {
  if (inventory?.hosts && Object.prototype.hasOwnProperty.call(inventory.hosts, answer)) {
    return { hosts: answer, spec: resolveTargets({ hosts: answer, inventory, identity, sshConfigFile })[0]!, fromInventory: true };
  }
  const a = parseAddress(answer);
  const hosts = a.user || sshConfigUser(sshConfigFile, a.host) ? answer : `root@${answer}`;
  return { hosts, spec: resolveTargets({ hosts, identity, sshConfigFile })[0]!, fromInventory: false };
}

function sshTargetOf(s: TargetSpec, knownHostsFile: string, identities: string[]): SshTarget {
  return {
    name: s.name,
    host: s.host,
    port: s.port,
    user: s.user,
    identities,
    knownHostsFile,
    acceptNewHostKeys: false,
    ...(s.jump ? { jump: sshTargetOf(s.jump, knownHostsFile, s.jump.identities) } : {}),
  };
}

function defaultKey(o: BootstrapCli, spec: TargetSpec): string | undefined {
  const candidates = [o.identity, ...spec.identities, `${homedir()}/.ssh/id_ed25519`, `${homedir()}/.ssh/id_ecdsa`, `${homedir()}/.ssh/id_rsa`];
  return candidates.find((f): f is string => Boolean(f) && existsSync(f!));
}

/** Unknown host key: shown as ssh shows it, recorded only on a yes. Changed or revoked: refused (exit 4). */
async function checkHostKey(t: SshTarget, out: Output): Promise<void> {
  const { blob, verdict } = await presentedHostKey(t);
  if (verdict.ok) return;
  if (verdict.reason !== 'unknown') throw new ConnectError(t.name, `${verdict.message} Nothing was changed.`);
  const name = knownHostName(t.host, t.port);
  out.say(`The authenticity of host '${one(name)}' can't be established.`);
  out.say(fingerprintMessage(blob));
  const trust = await askYesNo(`Trust this host key and record it in ${home(t.knownHostsFile)}?`, false);
  if (!trust) {
    throw new ConnectError(
      t.name,
      `host key not trusted, so hostsmith did not log in; nothing was recorded or changed. Compare the fingerprint with the one your provider shows (or on the server's console: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then run bootstrap again.`,
    );
  }
  await appendKnownHost(t.knownHostsFile, t.host, t.port, blob);
  out.say(`Recorded the host key of ${one(name)} in ${home(t.knownHostsFile)}.`);
}

/** Logs in to check the way in works, then hangs up (the run opens its own connection). */
async function checkLogin(t: SshTarget, how: string, out: Output): Promise<void> {
  const conn = await SshTransport.connect(t);
  await conn.close();
  out.say(`Logged in to ${one(t.host)} as ${one(t.user)} ${how}.`);
}

/**
 * The password is asked for until it logs in (three tries, as ssh gives); the open connection
 * is kept for installing the key once every question is answered.
 */
async function passwordLogin(t: SshTarget): Promise<SshTransport> {
  let conn: SshTransport | undefined;
  let fatal: unknown;
  let tries = 0;
  await askSecret(`Password for ${t.user}@${t.host} (used once, to install your key; never stored)`, async (pw) => {
    if (!pw) return 'type the password (Ctrl-C stops; nothing has been changed)';
    tries++;
    try {
      conn = await SshTransport.connect({ ...t, password: pw });
      return true;
    } catch (e) {
      const refused = e instanceof ConnectError && /password .* was refused/.test(e.message);
      if (refused && tries < 3)
        return `the password was refused by ${t.host} (if it is right, the server may not take password logins for ${t.user}: see PasswordAuthentication and PermitRootLogin in its sshd_config). Try again, or Ctrl-C to stop; nothing has been changed.`;
      fatal = e;
      return true;
    }
  });
  if (!conn) {
    const why = fatal instanceof Error ? fatal.message : `${t.name}: could not log in with the password`;
    throw new HostsmithError(`${why} Nothing was changed; check the password (and that the server takes password logins), then run bootstrap again.`, 4);
  }
  return conn;
}

/** Every var the recipe declares, asked in order; inventory values (for an inventory host) are the defaults. */
async function askRecipeVars(recipe: Recipe, hostVars: Record<string, unknown>): Promise<{ args: string[]; kept: Record<string, unknown> }> {
  const args: string[] = [];
  // What was typed, as its type: saved with the host (secrets never), so the next run is this one.
  const kept: Record<string, unknown> = {};
  for (const v of Object.values(recipe.vars)) {
    const dflt = hostVars[v.name] ?? v.default;
    const check = (s: string): true | string => {
      const r = convertVar(v, s);
      return 'error' in r ? `${v.name}: ${r.error}; type it again` : true;
    };
    const text = await askVarValue(v, dflt, check);
    if (text === undefined) continue;
    args.push(`${v.name}=${text}`);
    const typed = convertVar(v, text);
    if (!v.secret && !('error' in typed)) kept[v.name] = typed.value;
  }
  return { args, kept };
}

async function chooseRecipe(arg: string | undefined, cwd: string): Promise<string> {
  if (arg) return arg;
  const list = recipeChoices(cwd);
  if (!list.length) {
    throw new InputError(`no recipe given, and there is no recipes/*.yml in ${cwd} to choose from: run \`hostsmith bootstrap path/to/recipe.yml\` (nothing was changed)`);
  }
  return askPick(
    'Recipe to apply',
    list.map((r) => ({ name: `${r.file}${r.description ? ` — ${r.description}` : r.problem ? ` (${r.problem})` : ''}`, value: r.file, ...(r.description ? { description: r.description } : {}) })),
    list[0]!.file,
  );
}

/** A 130 from a prompt says "nothing was changed"; after the key or the run, say what was. */
async function saying<T>(what: string, p: () => Promise<T>): Promise<T> {
  try {
    return await p();
  } catch (e) {
    if (e instanceof HostsmithError && e.exitCode === 130 && /^stopped at the prompt/.test(e.message)) throw new HostsmithError(`stopped at the prompt; ${what}`, 130);
    throw e;
  }
}

async function offerToSave(
  c: Chosen,
  login: Login,
  keyFile: string | undefined,
  defaultFile: string,
  knownHostsFile: string,
  out: Output,
  run: { recipeFile: string; vars: Record<string, unknown>; secrets: string[] },
): Promise<void> {
  const s = c.spec;
  if (!(await askYesNo(`Save ${s.user}@${s.host}${s.port !== 22 ? `:${s.port}` : ''} to an inventory, so later runs can name it?`, true))) {
    out.say('Not saved to an inventory.');
    return;
  }
  const file = resolve(await askText('Inventory file', { default: displayPath(defaultFile), validate: (f) => (f.trim() ? true : 'type a file name') }));
  const inv = existsSync(file) ? await loadInventory(file) : undefined;
  const d = inv?.defaults ?? {};
  const taken = (n: string) => Boolean(inv?.hosts && Object.prototype.hasOwnProperty.call(inv.hosts, n));
  const name = await askText('Name for this host in the inventory', {
    default: [s.host, ...[2, 3, 4, 5, 6, 7, 8, 9].map((i) => `${s.host}-${i}`)].find((n) => !taken(n)),
    validate: (n) => {
      if (!n.trim()) return 'type a name';
      if (n.trim() !== n || /[\s,]/.test(n) || n.startsWith('-') || /[\u0000-\u001f\u007f]/.test(n)) return 'a name has no spaces, commas or control characters and does not start with "-"';
      if (n === 'local') return '"local" means this machine; choose another name';
      if (taken(n)) return `${displayPath(file)} already has a host named "${n}"; choose another name`;
      return true;
    },
  });
  const entry: InventoryHostEntry = { address: s.host };
  if (s.port !== (d.port ?? 22)) entry.port = s.port;
  if (s.user !== (d.user ?? userInfo().username)) entry.user = s.user;
  if (login !== 'agent' && keyFile && home(keyFile) !== d.identity && keyFile !== d.identity) entry.identity = home(keyFile);
  if (s.sudo && !d.sudo) entry.sudo = true;
  if (Object.keys(run.vars).length) entry.vars = run.vars;
  const { created } = await addHostToInventory(file, name, entry);
  const shown = displayPath(file);
  const kh = knownHostsFile === resolve(homedir(), '.ssh/known_hosts') ? '' : ` --known-hosts ${home(knownHostsFile)}`;
  const secrets = run.secrets.map((n) => ` --var ${n}=…`).join('');
  const saved = Object.keys(run.vars).length ? ` with the vars you typed (${Object.keys(run.vars).join(', ')}${run.secrets.length ? '; secrets are never saved' : ''})` : '';
  out.say(
    `${created ? 'Created' : 'Saved to'} ${shown}: ${name} (${s.user}@${s.host}${s.port !== 22 ? `:${s.port}` : ''})${saved}. Next time: hostsmith apply ${displayPath(resolve(run.recipeFile))} -i ${shown} --hosts ${name}${kh}${secrets}`,
  );
}

async function bootstrap(recipeArg: string | undefined, o: BootstrapCli, ctx: Ctx): Promise<number> {
  if (o.json)
    throw new InputError(
      'bootstrap asks questions and is for a person at a terminal; --json is not available. For scripts use `hostsmith apply <recipe> --hosts … --yes --json` (nothing was contacted or changed)',
    );
  if (!interactive()) {
    throw new InputError(
      'bootstrap asks its questions on a terminal, and there is none here (stdin or stderr is not a TTY). Run it in a terminal, or for scripts use `hostsmith apply <recipe> --hosts [user@]host[:port] --yes` (nothing was contacted or changed)',
    );
  }
  const out = outputFor(o);
  const config = loadConfig();
  const cwd = process.cwd();
  const inventoryFile = resolve(o.inventory ?? config.inventory ?? 'inventory.yml');
  const inventory = existsSync(inventoryFile) ? await loadInventory(inventoryFile) : undefined;
  if (o.identity && !existsSync(o.identity)) throw new InputError(`--identity: no such key file ${o.identity} (nothing was contacted or changed)`);
  const knownHostsFile = resolve(o.knownHosts ?? config.knownHosts ?? `${homedir()}/.ssh/known_hosts`);
  const sshConfigFile = `${homedir()}/.ssh/config`;

  out.say('hostsmith bootstrap: a few questions (Enter takes the default shown), then the plan. Nothing changes on the server before you confirm; Ctrl-C at any question stops with nothing changed.');

  // 1. The host.
  const suggestions = hostSuggestions(inventory, sshConfigFile);
  const answer = await askWithSuggestions('Host to set up ([user@]host[:port], or a name below)', {
    suggestions,
    ...(suggestions[0] ? { default: suggestions[0].value } : {}),
    validate: (s) => hostProblem(s, inventory),
  });
  const chosen = chooseTarget(answer, inventory, sshConfigFile, o.identity);
  const spec = chosen.spec;
  const where = `${spec.user}@${spec.host}${spec.port !== 22 ? `:${spec.port}` : ''}`;
  out.say(`Setting up ${one(where)}${chosen.fromInventory ? ` (${one(spec.name)} in ${displayPath(inventoryFile)})` : ''}${spec.jump ? ` via ${one(spec.jump.host)}` : ''}.`);

  // 2. How to log in.
  const agent = Boolean(process.env.SSH_AUTH_SOCK);
  const keyDefault = defaultKey(o, spec);
  const methods = [
    ...(agent ? [{ name: 'ssh-agent (the keys loaded in your agent)', value: 'agent' as Login }] : []),
    { name: `a key file${keyDefault ? ` (${home(keyDefault)})` : ''}`, value: 'key' as Login },
    { name: `a password, used once to install your public key (then by key)`, value: 'password' as Login },
  ];
  const login = await askPick<Login>(`How do you log in to ${where}?`, methods, o.identity || spec.identities.length ? 'key' : agent ? 'agent' : keyDefault ? 'key' : 'password');
  let keyFile: string | undefined;
  let pub: PublicKey | undefined;
  if (login === 'key') {
    keyFile = resolve(
      await askText('Private key file', { ...(keyDefault ? { default: home(keyDefault) } : {}), validate: (f) => (f ? checkPrivateKey(expand(f)) : 'type the path of a private key file') }).then(
        expand,
      ),
    );
  } else if (login === 'password') {
    const pubDefault = [keyDefault, `${homedir()}/.ssh/id_ed25519`].map((k) => k && `${k}.pub`).find((p) => p && existsSync(p));
    const pubFile = resolve(
      expand(
        await askText('Public key to install (its private key, beside it without .pub, logs in from then on)', {
          ...(pubDefault ? { default: home(pubDefault) } : {}),
          validate: (f) => {
            if (!f) return 'type the path of your public key (e.g. ~/.ssh/id_ed25519.pub; make one with ssh-keygen -t ed25519)';
            const k = readPublicKey(expand(f));
            if (typeof k === 'string') return k;
            const priv = expand(f).replace(/\.pub$/, '');
            if (priv === expand(f)) return 'a public key file name ends in .pub, beside its private key';
            return checkPrivateKey(priv, k);
          },
        }),
      ),
    );
    pub = readPublicKey(pubFile) as PublicKey;
    keyFile = pubFile.replace(/\.pub$/, '');
  }
  const identities = login === 'agent' ? [] : keyFile ? [keyFile] : spec.identities;

  // 3. The host key, then the login itself.
  const target = sshTargetOf(spec, knownHostsFile, identities);
  await checkHostKey(target, out);
  let passwordConn: SshTransport | undefined;
  if (login === 'password') passwordConn = await passwordLogin({ ...target, identities: [] });
  else await checkLogin(target, login === 'agent' ? 'with ssh-agent' : `with ${home(keyFile!)}`, out);

  let keyInstalled = false;
  try {
    // 4. The recipe, 5. its vars.
    const recipeFile = await chooseRecipe(recipeArg, cwd);
    const recipe = await loadRecipe(resolve(recipeFile));
    if (recipe.description) out.say(`${one(recipe.name)}: ${one(recipe.description)}`);
    const { args: vars, kept: typedVars } = await askRecipeVars(recipe, chosen.fromInventory ? spec.vars : {});
    let sudo = spec.sudo;
    if (spec.user !== 'root' && !sudo) {
      sudo = await askYesNo(`You log in as ${spec.user}, not root: run the recipe's commands through sudo?`, true);
    }

    if (passwordConn && pub) {
      const conn = passwordConn;
      passwordConn = undefined;
      let said: 'added' | 'present';
      try {
        said = await installAuthorizedKey(conn, pub);
      } catch (e) {
        throw new ConnectError(
          spec.name,
          `${errorMessage(e)} (nothing else was changed; log in with the password and add ${home(keyFile!)}.pub by hand, then run bootstrap again choosing the key file)`,
        );
      } finally {
        await conn.close();
      }
      keyInstalled = true;
      out.say(
        said === 'added'
          ? `Installed ${home(keyFile!)}.pub in ${one(spec.user)}'s ~/.ssh/authorized_keys on ${one(spec.host)}; the password is not needed again.`
          : `${home(keyFile!)}.pub was already in ${one(spec.user)}'s ~/.ssh/authorized_keys on ${one(spec.host)}.`,
      );
      try {
        await checkLogin(target, `with ${home(keyFile!)}`, out);
      } catch (e) {
        throw new ConnectError(
          spec.name,
          `the key was installed, but logging in with ${home(keyFile!)} was refused: ${errorMessage(e)} (does sshd allow public keys for ${spec.user}? nothing else was changed)`,
        );
      }
    }

    const prep = await prepare(recipeFile, {
      hosts: chosen.hosts,
      ...(chosen.fromInventory ? { inventory: inventoryFile } : {}),
      ...(login !== 'agent' && keyFile ? { identity: keyFile } : {}),
      knownHosts: knownHostsFile,
      acceptNewHostKeys: false,
      sudo,
      var: vars,
      ...(o.stateDir ? { stateDir: o.stateDir } : {}),
    });
    prep.warnings.forEach((w) => out.warn(w));
    const changedNote = keyInstalled ? `the recipe changed nothing on ${spec.host} (your key stays in ${spec.user}'s ~/.ssh/authorized_keys)` : 'nothing was changed';
    const code = await saying(changedNote, () => runPrepared(prep, { mode: 'apply', confirm: true, confirmDefault: true, planOptions: {} }, out, ctx));

    if (code !== 4 && code !== 130 && !chosen.fromInventory) {
      const done = code === 0 ? 'the run above stands' : 'the run above is as reported';
      await saying(`the host was not saved to an inventory (${done})`, () =>
        offerToSave({ ...chosen, spec: { ...spec, sudo } }, login, keyFile, inventoryFile, knownHostsFile, out, {
          recipeFile,
          vars: typedVars,
          secrets: Object.values(recipe.vars)
            .filter((v) => v.secret)
            .map((v) => v.name),
        }),
      );
    }
    return code;
  } finally {
    await passwordConn?.close();
  }
}

function expand(p: string): string {
  const t = p.trim();
  return t === '~' || t.startsWith('~/') ? homedir() + t.slice(1) : t;
}

export function registerBootstrap(program: Command, ctx: Ctx): void {
  program
    .command('bootstrap')
    .description('set up a new server interactively: asks host, login, recipe and vars; shows the plan; applies on a yes')
    .argument('[recipe]', 'recipe file (YAML); without it, pick one from recipes/ in the working directory')
    .option('-i, --inventory <file>', 'inventory to offer hosts from and to save the host to (default ./inventory.yml)')
    .option('--identity <keyfile>', 'private key to offer first')
    .option('--known-hosts <file>', 'known_hosts file (default ~/.ssh/known_hosts)')
    .action(async (recipe: string | undefined, _o: BootstrapCli, cmd: Command) => {
      ctx.exit(await bootstrap(recipe, cmd.optsWithGlobals(), ctx));
    });
}
