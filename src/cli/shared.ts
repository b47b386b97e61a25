import type { Command } from 'commander';
import { Output } from './output.js';
import type { GlobalOptions } from './context.js';

/** What commands get from main: the one place that exits, and a verbose logger. */
export interface Ctx {
  exit(code: number): void;
  log(msg: string): void;
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

export function addTargetOptions(c: Command): Command {
  return c
    .option('--hosts <list>', 'comma list of local, [user@]host[:port], inventory hosts and groups, all, globs (web*), !exclusions, &intersections')
    .option('-l, --limit <list>', "narrow --hosts (or the whole inventory) to these hosts or groups, as Ansible's --limit")
    .option('-i, --inventory <file>', 'inventory file (YAML)')
    .option('--identity <keyfile>', 'SSH private key to use')
    .option('--known-hosts <file>', 'known_hosts file (default ~/.ssh/known_hosts)')
    .option('--accept-new-host-keys', 'record keys of hosts not yet known (a changed key is still refused)')
    .option('--sudo', 'run commands through sudo')
    .option('--concurrency <n>', 'hosts at once (default 10)');
}

export function addVarOptions(c: Command): Command {
  return c.option('--var <name=value>', 'set a var (repeatable)', collect).option('--vars-file <yaml>', 'vars from a YAML file');
}

export function outputFor(o: GlobalOptions): Output {
  return new Output({
    json: Boolean(o.json),
    color: colorWanted(o.color !== false, process.env, Boolean(process.stdout.isTTY)),
    verbose: Boolean(o.verbose),
    // A terminal that reports no width (some pseudo-terminals) makes spinners redraw without end.
    tty: Boolean(process.stdout.isTTY) && (process.stdout.columns ?? 0) > 0,
  });
}

/**
 * Colour as the common conventions have it: --no-color always wins; FORCE_COLOR (anything but
 * 0 or false) turns it on even into a pipe or a log; NO_COLOR (non-empty) turns it off;
 * otherwise colour only on a terminal.
 */
export function colorWanted(flag: boolean, env: NodeJS.ProcessEnv, tty: boolean): boolean {
  if (!flag) return false;
  const force = env.FORCE_COLOR;
  if (force !== undefined) return !/^(0|false)$/i.test(force);
  if (env.NO_COLOR) return false;
  return tty;
}
