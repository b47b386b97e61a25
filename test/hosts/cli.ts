/**
 * npm run sandbox -- up [N] [--dir D]     start N (default 3) detached Debian hosts
 * npm run sandbox -- down [--dir D|--all] stop them and delete their files
 * npm run sandbox -- status               what is running, which addresses are claimed
 */
import { existsSync, readdirSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { describeMissing, listSandboxes, prerequisites, startSandbox, stopSandbox, type HostNet, type Sandbox, type SandboxOptions } from './hosts.js';
import { HOST_KINDS, type HostKind, isRootfsReady, rootfsPath } from './rootfs.js';
import { liveSlots } from './slots.js';
import { SANDBOX_ROOT } from './util.js';

const DEFAULT_DIR = join(SANDBOX_ROOT, 'default');
const USAGE = `usage: npm run sandbox -- <command>
  up [N] [--dir D] [--kind plain|systemd] [--net shared|private]
                         start N Debian hosts (default 3) that keep running after this command;
                         systemd: a booted systemd per host (systemd-nspawn); private: each host
                         in a network of its own, reached over a veth pair (10.231.x.2:22)
  down [--dir D] [--all] stop the hosts in D (or every sandbox) and delete their files
  status                 list sandboxes and the loopback addresses they hold
default dir: ${DEFAULT_DIR}`;

interface Args {
  command: string;
  count: number;
  dir: string;
  all: boolean;
  kind: HostKind;
  net: HostNet;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { command: argv[0] ?? 'help', count: 3, dir: DEFAULT_DIR, all: false, kind: 'plain', net: 'shared' };
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--dir') args.dir = resolve(argv[++i] ?? fail('--dir needs a path'));
    else if (a === '--all') args.all = true;
    else if (a === '--kind') {
      const k = argv[++i];
      if (!HOST_KINDS.includes(k as HostKind)) fail(`--kind must be one of ${HOST_KINDS.join(', ')}, got ${k ?? 'nothing'}`);
      args.kind = k as HostKind;
    } else if (a === '--net') {
      const n = argv[++i];
      if (n !== 'shared' && n !== 'private') fail(`--net must be shared or private, got ${n ?? 'nothing'}`);
      args.net = n;
    } else if (/^\d+$/.test(a)) args.count = Number(a);
    else fail(`unknown argument: ${a}`);
  }
  return args;
}

function fail(msg: string): never {
  process.stderr.write(`error: ${msg}\n\n${USAGE}\n`);
  process.exit(2);
}

function checkPrerequisites(o: SandboxOptions = {}): void {
  const pre = prerequisites(o);
  if (pre.ok) return;
  process.stderr.write(`error: this machine cannot run sandbox hosts.\n  ${describeMissing(pre.missing)}\n`);
  process.exit(2);
}

function exampleRecipe(): string {
  const dir = resolve('recipes');
  const found = existsSync(dir)
    ? readdirSync(dir)
        .filter((f) => /\.ya?ml$/.test(f))
        .sort()
    : [];
  return found[0] ? `recipes/${found[0]}` : 'recipes/<recipe>.yml';
}

function printHowToReach(sb: Sandbox): void {
  const rel = (p: string): string => (p.startsWith(process.cwd()) ? relative(process.cwd(), p) : p);
  const lines = [
    `${sb.hosts.length} Debian bookworm ${sb.kind === 'systemd' ? 'systemd ' : ''}host(s) running (sandbox dir ${sb.dir}):`,
    ...sb.hosts.map((h) => `  ${h.name}  ${h.address}:${h.port}   ssh -F ${sb.sshConfigPath} ${h.name}`),
    '',
    `users: root, deploy (passwordless sudo), nosudo; all log in with ${sb.keyPath}`,
    `  e.g. ssh -i ${sb.keyPath} -o UserKnownHostsFile=${sb.knownHostsPath} -p ${sb.hosts[0]?.port} deploy@${sb.hosts[0]?.address}`,
    '',
    `ssh_config   ${sb.sshConfigPath}`,
    `inventory    ${sb.inventoryPath}`,
    `known_hosts  ${sb.knownHostsPath}`,
    '',
    'try:',
    `  ./bin/hostsmith.js plan ${exampleRecipe()} -i ${rel(sb.inventoryPath)} --known-hosts ${rel(sb.knownHostsPath)} --hosts h1`,
    '',
    sb.net === 'private'
      ? 'note: each host has a network of its own (its firewall and net.* sysctls are its alone), reached from here over a veth pair; it has no route out, but apt and logins reach the web (ports 80 and 443) through a proxy here.'
      : `note: hosts share this machine's network: a service listening on 0.0.0.0:80 in one host takes port 80 for all.`,
    `stop: npm run sandbox -- down${sb.dir === DEFAULT_DIR ? '' : ` --dir ${sb.dir}`}`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

async function up(args: Args): Promise<void> {
  checkPrerequisites({ kind: args.kind, net: args.net });
  const started = Date.now();
  const sb = await startSandbox({ count: args.count, detached: true, dir: args.dir, kind: args.kind, net: args.net });
  process.stderr.write(`started in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  printHowToReach(sb);
}

async function down(args: Args): Promise<void> {
  const dirs = args.all ? allSandboxDirs() : [args.dir];
  if (!args.all && !existsSync(args.dir)) {
    process.stdout.write(`no sandbox in ${args.dir}; nothing to stop\n`);
    return;
  }
  for (const dir of dirs) {
    await stopSandbox(dir);
    process.stdout.write(`stopped and removed ${dir}\n`);
  }
  if (dirs.length === 0) process.stdout.write('no sandboxes found\n');
}

/** Sandboxes directly under SANDBOX_ROOT and inside test-run dirs. */
function allSandboxes(): ReturnType<typeof listSandboxes> {
  const runDirs = existsSync(SANDBOX_ROOT) ? readdirSync(SANDBOX_ROOT).filter((n) => n.startsWith('run-')) : [];
  return [SANDBOX_ROOT, ...runDirs.map((n) => join(SANDBOX_ROOT, n))].flatMap((root) => listSandboxes(root));
}

function allSandboxDirs(): string[] {
  return allSandboxes().map((s) => s.dir);
}

function status(): void {
  const pre = prerequisites();
  process.stdout.write(`prerequisites: ${pre.ok ? 'ok' : describeMissing(pre.missing)}\n`);
  for (const kind of HOST_KINDS) {
    const path = rootfsPath(kind);
    process.stdout.write(`rootfs (${kind}): ${path} ${isRootfsReady(path) ? '(built)' : '(not built yet: the first "up" or test run builds it, ~1 min)'}\n`);
  }
  const sandboxes = allSandboxes();
  if (sandboxes.length === 0) process.stdout.write('sandboxes: none\n');
  for (const s of sandboxes) {
    const kind = s.detached ? 'detached' : 'test';
    process.stdout.write(`${s.dir}  [${s.running ? 'running' : 'STOPPED (run down to clean up)'}, ${kind}]\n`);
    for (const h of s.hosts) process.stdout.write(`  ${h.name}  ${h.address}:${h.port}   ssh -F ${join(s.dir, 'ssh_config')} ${h.name}\n`);
  }
  const slots = liveSlots();
  process.stdout.write(`claimed addresses: ${slots.length ? slots.map(([s, o]) => `127.0.0.${s} (pid ${o.pid})`).join(', ') : 'none'}\n`);
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  switch (args.command) {
    case 'up':
      return up(args);
    case 'down':
      return down(args);
    case 'status':
      return status();
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(`${USAGE}\n`);
      return;
    default:
      fail(`unknown command: ${args.command}`);
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`error: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
