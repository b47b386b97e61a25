/**
 * `schedule add | list | run | remove` (SPEC §11): a recipe handed to cron. `add` checks now
 * everything a run will need and installs one marked crontab line; `run` (what cron calls) applies
 * the recipe the way `apply --yes` does (or, for a plan-only schedule, plans it the way
 * `plan --detailed-exitcode` does), with no terminal and no prompts, under a per-schedule lock,
 * writing its text and its JSON events to two files per run; `list` and `remove` look after them.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, unlinkSync, writeSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { Writable } from 'node:stream';
import type { Command } from 'commander';
import { CronExpressionParser } from 'cron-parser';
import cronstrue from 'cronstrue';
import ssh2 from 'ssh2';
import { HostsmithError, InputError, errorMessage, type InputIssue } from '../../errors.js';
import type { RunEvent } from '../../engine/events.js';
import { newRunId } from '../../engine/fleet.js';
import { cronProblem } from '../../recipe/schema.js';
import { loadVarsFile } from '../../recipe/vars.js';
import { keysFor, knownHostName } from '../../transport/known-hosts.js';
import { loadInventory, resolveTargets, type TargetSpec } from '../../transport/targets.js';
import { packageRoot } from '../../version.js';
import { loadConfig } from '../config.js';
import { prepare, stateDirOf, type GlobalOptions, type TargetCliOptions } from '../context.js';
import { addEntry, hasEntry, jobLine, markedNames, markerLine, readCrontab, removeEntry, writeCrontab } from '../crontab.js';
import { escapeText } from '../escape.js';
import { Output } from '../output.js';
import {
  acquireScheduleLock,
  createSettings,
  eventsFile,
  lastRun,
  lockHolder,
  logFile,
  logsDir,
  nameProblem,
  outcomeOf,
  readSettings,
  rotateLogs,
  runIds,
  settingsFile,
  storedNames,
  type LockOwner,
  type RunOutcome,
  type Settings,
} from '../schedules.js';
import { addTargetOptions, addVarOptions, outputFor, type Ctx } from '../shared.js';
import { addFleetOptions, runPrepared } from './run.js';

interface AddCli extends TargetCliOptions, GlobalOptions {
  cron: string;
  name?: string;
  onFailure?: string;
  planOnly?: boolean;
}

/** The fleet options `apply` takes, as the settings file keeps them (by the same names). */
const FLEET_KEYS = ['batch', 'maxFail', 'rollbackScope', 'confirm'] as const;
const FLEET_FLAGS: Record<(typeof FLEET_KEYS)[number], string> = { batch: '--batch', maxFail: '--max-fail', rollbackScope: '--rollback-scope', confirm: '--confirm' };

/** How long the --on-failure command may take before it is stopped. */
const ON_FAILURE_TIMEOUT_MS = 5 * 60_000;

/** The CLI entry point as installed (bin/hostsmith.js beside dist/), for the crontab line. */
function cliPath(): string {
  const root = packageRoot();
  const bin = root ? join(root, 'bin', 'hostsmith.js') : undefined;
  return bin && existsSync(bin) ? bin : resolve(process.argv[1] ?? 'hostsmith');
}

function plainWords(expr: string): string {
  try {
    return cronstrue.toString(expr.trim(), { verbose: false });
  } catch {
    return expr;
  }
}

const pad = (n: number) => String(n).padStart(2, '0');
function localTime(d: Date, seconds = false): string {
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}${seconds ? `:${pad(d.getSeconds())}` : ''}`;
}
function zoneName(): string {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || 'local time';
}

/** The next `n` times cron will run `expr`, in this machine's zone (the zone cron uses). */
export function nextRuns(expr: string, n = 3, from = new Date()): Date[] {
  try {
    return CronExpressionParser.parse(expr.trim(), { currentDate: from })
      .take(n)
      .map((d) => d.toDate());
  } catch {
    return [];
  }
}

/** Host keys a run will need, from the known_hosts file alone (a scheduled run cannot ask). */
function hostKeyIssues(specs: TargetSpec[], knownHostsFile: string, recipeArg: string): InputIssue[] {
  let text = '';
  try {
    text = readFileSync(knownHostsFile, 'utf8');
  } catch {
    /* no file: every key is unknown */
  }
  const issues: InputIssue[] = [];
  const check = (s: TargetSpec, via?: string) => {
    if (s.kind !== 'ssh') return;
    if (s.jump) check(s.jump, s.name);
    const name = knownHostName(s.host, s.port);
    if (keysFor(text, name).keys.length) return;
    issues.push({
      message:
        `${s.name}${via ? ` (jump host for ${via})` : ''}: no host key for ${name} in ${knownHostsFile}, and a scheduled run cannot ask. ` +
        `Record it first: check the fingerprint and run \`hostsmith plan ${recipeArg} --hosts ${s.name} --known-hosts ${knownHostsFile} --accept-new-host-keys\` once (or \`ssh-keyscan -p ${s.port} ${s.host} >> ${knownHostsFile}\`)`,
    });
  };
  specs.forEach((s) => check(s));
  return issues;
}

/** Keys cron can use: there is no ssh-agent under cron, so a key file must exist and have no passphrase. */
function identityIssues(specs: TargetSpec[]): InputIssue[] {
  const issues: InputIssue[] = [];
  const seen = new Set<string>();
  const check = (s: TargetSpec) => {
    if (s.kind !== 'ssh') return;
    if (s.jump) check(s.jump);
    const explicit = s.identities.length > 0;
    const files = explicit ? s.identities : ['id_ed25519', 'id_ecdsa', 'id_rsa'].map((f) => resolve(homedir(), '.ssh', f));
    const usable: string[] = [];
    const notes: string[] = [];
    for (const f of files) {
      let bytes: Buffer;
      try {
        bytes = readFileSync(f);
      } catch (e) {
        if (explicit) notes.push(`cannot read key file ${f}: ${errorMessage(e)}`);
        continue;
      }
      const parsed = ssh2.utils.parseKey(bytes);
      if (parsed instanceof Error)
        notes.push(/passphrase/i.test(parsed.message) ? `key file ${f} has a passphrase, and cron has no ssh-agent to unlock it` : `${f} is not a usable private key: ${parsed.message}`);
      else usable.push(f);
    }
    if (usable.length) return;
    const key = `${s.name}:${files.join(',')}`;
    if (seen.has(key)) return;
    seen.add(key);
    issues.push({
      message: `${s.name}: no key a scheduled run can log in with (${notes.join('; ') || `no ${files.join(', ')}`}); runs under cron have no ssh-agent, so pass --identity <keyfile> with a key that has no passphrase`,
    });
  };
  specs.forEach(check);
  return issues;
}

/** Whether some process on this machine is a cron daemon (a schedule without one never runs). */
function cronDaemonSeen(): boolean {
  try {
    return readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .some((p) => {
        try {
          return /^(cron|crond|cronie|busybox)$/.test(readFileSync(`/proc/${p}/comm`, 'utf8').trim());
        } catch {
          return false;
        }
      });
  } catch {
    return true; // cannot tell: say nothing
  }
}

async function add(recipeArg: string, o: AddCli): Promise<number> {
  const out = outputFor(o);
  const problem = cronProblem(o.cron);
  if (problem) throw new InputError(`--cron: ${problem}; nothing was changed`);
  if (o.name !== undefined && nameProblem(o.name)) throw new InputError(nameProblem(o.name)!);
  if (o.onFailure !== undefined && !o.onFailure.trim()) throw new InputError('--on-failure: the command is empty; give a shell command, or leave the option out');
  if (o.planOnly) {
    // A plan reads every host at once and changes nothing: these would be kept and never used,
    // and a reader of the schedule would take them to mean something.
    const given = FLEET_KEYS.filter((k) => o[k] !== undefined).map((k) => FLEET_FLAGS[k]);
    if (given.length)
      throw new InputError(
        `${given.join(', ')} with --plan-only: a plan-only run reads every host at once and changes nothing, so there are no batches to stop and nothing to roll back or confirm; leave ${given.length > 1 ? 'them' : 'it'} out (nothing was changed)`,
      );
  }

  const config = loadConfig();
  // Everything a run reads: the recipe (as `validate`), inventory, targets, every var, complete, and
  // the fleet options (checked here as `apply` checks them, so a bad one never reaches the crontab).
  const prep = await prepare(recipeArg, o);
  try {
    prep.warnings.forEach((w) => out.warn(w));
    const name = o.name ?? prep.recipe.name;
    if (nameProblem(name)) throw new InputError(nameProblem(name)!);
    const stateDir = prep.stateDir;
    const knownHosts = resolve(o.knownHosts ?? config.knownHosts ?? `${homedir()}/.ssh/known_hosts`);
    const issues = [...hostKeyIssues(prep.specs, knownHosts, recipeArg), ...identityIssues(prep.specs)];
    if (issues.length) throw new InputError([{ message: `schedule ${name} was not added: a run under cron could not reach every host (nothing was changed):` }, ...issues]);

    const crontab = await readCrontab();
    if (existsSync(settingsFile(stateDir, name))) {
      throw new InputError(
        `a schedule named ${name} already exists (${settingsFile(stateDir, name)}): remove it first with \`hostsmith schedule remove ${name} --state-dir ${stateDir}\`, or pick another --name; nothing was changed`,
      );
    }
    if (hasEntry(crontab, name)) {
      throw new InputError(
        `your crontab already has an entry marked "${markerLine(name)}" (see crontab -l): remove it with \`hostsmith schedule remove ${name}\`, or pick another --name; nothing was changed`,
      );
    }

    const declared = new Set(Object.keys(prep.recipe.vars));
    const fileVars = o.varsFile ? await loadVarsFile(resolve(o.varsFile)) : {};
    const inventory = o.inventory ?? config.inventory;
    const options: Settings['options'] = { knownHosts };
    if (o.hosts !== undefined) options.hosts = o.hosts;
    if (o.limit !== undefined) options.limit = o.limit;
    if (inventory) options.inventory = resolve(inventory);
    if (o.identity) options.identity = resolve(o.identity);
    const acceptNew = o.acceptNewHostKeys ?? config.acceptNewHostKeys;
    if (acceptNew !== undefined) options.acceptNewHostKeys = acceptNew;
    const sudo = o.sudo ?? config.sudo;
    if (sudo !== undefined) options.sudo = sudo;
    const concurrency = o.concurrency ?? (config.concurrency !== undefined ? String(config.concurrency) : undefined);
    if (concurrency !== undefined) options.concurrency = concurrency;
    for (const k of FLEET_KEYS) if (o[k] !== undefined) options[k] = String(o[k]);

    const settings: Settings = {
      version: 1,
      name,
      recipe: resolve(recipeArg),
      recipeName: prep.recipe.name,
      cron: o.cron.trim(),
      ...(o.onFailure !== undefined ? { onFailure: o.onFailure } : {}),
      ...(o.planOnly ? { planOnly: true } : {}),
      created: new Date().toISOString(),
      cwd: process.cwd(),
      options,
      // Only this recipe's vars: a vars file may hold other recipes' secrets too.
      vars: { cli: { ...prep.cliVars }, file: Object.fromEntries(Object.entries(fileVars).filter(([k]) => declared.has(k))) },
    };
    const line = jobLine(settings.cron, [process.execPath, cliPath(), 'schedule', 'run', name, '--state-dir', stateDir]);
    const file = createSettings(stateDir, settings);
    try {
      await writeCrontab(addEntry(crontab, name, line));
    } catch (e) {
      unlinkSync(file);
      throw e;
    }

    const hosts = prep.targets.map((t) => t.name);
    const next = nextRuns(settings.cron);
    if (o.json) {
      const ev = {
        event: 'schedule-added',
        runId: newRunId(),
        time: new Date().toISOString(),
        schedule: name,
        recipe: settings.recipe,
        hosts,
        cron: settings.cron,
        description: plainWords(settings.cron),
        planOnly: settings.planOnly === true,
        fleet: fleetOf(settings),
        next: next.map((d) => d.toISOString()),
        settings: file,
        crontabLine: line,
      };
      process.stdout.write(JSON.stringify(ev) + '\n');
    } else {
      out.say(`Schedule ${name} added: recipe ${escapeText(prep.recipe.name)} (${escapeText(settings.recipe)}) on ${escapeText(hosts.join(', '))}, ${plainWords(settings.cron)} (${settings.cron}).`);
      if (settings.planOnly) out.say(PLAN_ONLY_WORDS);
      const fleet = fleetWords(settings);
      if (fleet) out.say(`Each run applies with ${escapeText(fleet)}.`);
      out.say(`Next runs: ${next.map((d) => localTime(d)).join(', ')} (${zoneName()}).`);
      out.say(`Your crontab now has (crontab -l):`);
      out.say(`  ${markerLine(name)}`);
      out.say(`  ${escapeText(line)}`);
      out.say(`Settings, with any secret vars: ${escapeText(file)} (mode 0600).`);
      out.say(
        `Each run logs to ${escapeText(logsDir(stateDir, name))}/<run-id>.log (its JSON events beside it, in <run-id>.events.ndjson). Try it now with \`hostsmith schedule run ${name} --state-dir ${escapeText(stateDir)}\`; see its runs with \`hostsmith schedule list\`.`,
      );
    }
    if (!cronDaemonSeen())
      out.warn(`warning: no cron daemon seems to run on this machine, so schedule ${name} will not run until one does (on Debian: apt-get install cron, then service cron start).`);
    return 0;
  } finally {
    await prep.close();
  }
}

const PLAN_ONLY_WORDS = 'Plan only: each run reads the hosts and changes nothing; a host that has drifted (something would change) fails the run (exit 2) and runs --on-failure.';

/** The fleet options a schedule keeps, by the names `apply` takes them. */
function fleetOf(s: Settings): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of FLEET_KEYS) if (s.options[k] !== undefined) out[FLEET_FLAGS[k]] = s.options[k]!;
  return out;
}
function fleetWords(s: Settings): string {
  return Object.entries(fleetOf(s))
    .map(([flag, v]) => `${flag} ${v}`)
    .join(' ');
}

/**
 * A run's output: the human lines `apply` prints go to the .log, and the JSON events `--json`
 * would print go to the events file, one per line.
 */
class LogOutput extends Output {
  finished: (RunEvent & { event: 'run-finished' }) | undefined;
  constructor(
    write: (s: string) => void,
    private readonly writeEvent: (s: string) => void,
  ) {
    const stream = new Writable({
      write(chunk: Buffer | string, _enc, cb) {
        write(String(chunk));
        cb();
      },
    });
    super({ json: false, color: false, verbose: true, tty: false, out: stream, err: stream });
  }
  override event(e: RunEvent): void {
    super.event(e);
    if (e.event === 'run-finished') this.finished = e;
    if (e.event !== 'step-started') this.writeEvent(JSON.stringify(e) + '\n');
  }
}

function holderText(h: LockOwner): string {
  return `run ${h.runId}, pid ${h.pid} on ${h.host}, since ${h.since}`;
}

/** Runs the --on-failure command with the documented environment; its output goes to the log. */
function onFailure(cmd: string, fd: number, env: Record<string, string>, cwd: string): Promise<string> {
  return new Promise((res) => {
    const child = spawn('/bin/sh', ['-c', cmd], { cwd, env: { ...process.env, ...env }, stdio: ['ignore', fd, fd], detached: true });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
    }, ON_FAILURE_TIMEOUT_MS);
    child.on('error', (e) => {
      clearTimeout(timer);
      res(`could not be started: ${e.message}`);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      res(timedOut ? `was stopped after ${ON_FAILURE_TIMEOUT_MS / 60_000} minutes` : signal ? `was killed by ${signal}` : `exited ${code}`);
    });
  });
}

async function run(name: string, g: GlobalOptions): Promise<number> {
  const np = nameProblem(name);
  if (np) throw new InputError(np);
  const stateDir = stateDirOf(g);
  const s = readSettings(stateDir, name);
  const runId = newRunId();
  const dir = resolve(logsDir(stateDir, name));
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const logPath = logFile(dir, runId);
  const eventsPath = eventsFile(dir, runId);
  const fd = openSync(logPath, 'wx', 0o600);
  let efd: number;
  try {
    efd = openSync(eventsPath, 'wx', 0o600);
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  // By hand on a terminal, the run is shown as it goes too.
  const echo = Boolean(process.stderr.isTTY);
  const write = (text: string) => {
    writeSync(fd, text);
    if (echo) process.stderr.write(text);
  };
  const writeEvent = (json: string) => {
    writeSync(efd, json);
  };
  const say = (line: string) => write(line + '\n');
  const started = new Date().toISOString();
  const outcome = (event: RunOutcome['event'], status: string, exitCode: number): RunOutcome => ({
    event,
    schedule: name,
    runId,
    time: new Date().toISOString(),
    started,
    status,
    exitCode,
    ...(s.planOnly ? { planOnly: true } : {}),
    log: logPath,
    events: eventsPath,
  });
  try {
    say(`hostsmith schedule ${name}: run ${runId} started ${started} (pid ${process.pid}); recipe ${s.recipe}${s.planOnly ? '; plan only: nothing is changed' : ''}`);
    rotateLogs(dir);
    const lock = acquireScheduleLock(stateDir, name, runId);
    if (!lock.ok) {
      say(
        `skipped: still running — the previous run of schedule ${name} (${holderText(lock.holder)}) has not finished, so this one did nothing. If that run is stuck, stop it (kill ${lock.holder.pid}); the next run then goes ahead.`,
      );
      writeEvent(JSON.stringify(outcome('schedule-skipped', 'skipped', 0)) + '\n');
      return 0;
    }
    let code: number;
    let status: string;
    try {
      if (lock.cleared)
        say(
          `note: the previous run ${lock.cleared.runId} (pid ${lock.cleared.pid}) is gone without finishing; its lock was cleared. If it was applying, \`hostsmith recover ${lock.cleared.runId}\` finishes it.`,
        );
      let cwd = s.cwd;
      if (!existsSync(cwd)) {
        say(`warning: the folder the schedule was added from (${cwd}) is gone; running from ${process.cwd()}.`);
        cwd = process.cwd();
      }
      process.chdir(cwd);
      const out = new LogOutput(write, writeEvent);
      const ctx: Ctx = { exit: () => {}, log: (m) => say(m) };
      try {
        // As `apply --yes` (or `plan --detailed-exitcode`): the same preparation, with the stored
        // target and fleet options (no prompt: nothing to ask with), and the same run.
        const prep = await prepare(s.recipe, { ...s.options, planVars: s.vars, stateDir });
        prep.warnings.forEach((w) => out.warn(w));
        if (s.planOnly) {
          code = await runPrepared(prep, { mode: 'plan', detailedExitcode: true, confirm: false, planOptions: {}, runId }, out, ctx);
          // A plan's own codes are never 2 (bad input throws before it): 2 here is "something would change".
          status = code === 2 ? 'drifted' : code === 0 ? 'in-sync' : (out.finished?.status ?? 'failed');
          if (code === 2) say(`drift: applying the recipe would change the hosts above (nothing was changed); this counts as a failure of plan-only schedule ${name}.`);
        } else {
          code = await runPrepared(prep, { mode: 'apply', confirm: false, planOptions: {}, runId }, out, ctx);
          status = out.finished?.status ?? (code === 0 ? 'ok' : 'failed');
        }
      } catch (e) {
        code = e instanceof HostsmithError ? e.exitCode : 1;
        status = code === 2 ? 'invalid' : 'error';
        say(`error: ${escapeText(e instanceof HostsmithError ? e.message : `unexpected error: ${errorMessage(e)}`, { multiline: true })}`);
        if (!(e instanceof HostsmithError) && e instanceof Error && e.stack) say(e.stack);
      }
      say(`schedule ${name}: run ${runId} finished: ${status}, exit ${code}.`);
      writeEvent(JSON.stringify(outcome('schedule-finished', status, code)) + '\n');
      if (code !== 0 && s.onFailure) {
        say(`running the --on-failure command: ${s.onFailure}`);
        const how = await onFailure(s.onFailure, fd, { HOSTSMITH_SCHEDULE: name, HOSTSMITH_RUN_ID: runId, HOSTSMITH_EXIT_CODE: String(code), HOSTSMITH_LOG: logPath }, cwd);
        say(`the --on-failure command ${how}.`);
      }
    } finally {
      lock.release();
    }
    const line = `schedule ${name}: run ${runId} ${status}, exit ${code}. Log: ${logPath}`;
    // Under cron, only a failure says anything (cron mails it where mail is set up).
    if (code !== 0) process.stderr.write(`hostsmith: ${line}\n`);
    else if (process.stdout.isTTY) process.stdout.write(`${line}\n`);
    return code;
  } finally {
    closeSync(fd);
    closeSync(efd);
  }
}

interface ListEntry {
  name: string;
  recipe: string;
  recipeFile: string;
  hosts: string[];
  hostsError?: string;
  cron: string;
  description: string;
  next: string[];
  lastRun: RunOutcome | null;
  running: LockOwner | null;
  lastSkipped: RunOutcome | null;
  inCrontab: boolean;
  onFailure: string | null;
  planOnly: boolean;
  /** Fleet options a run applies with, by their flags (`--batch`: `2`). */
  fleet: Record<string, string>;
  settings: string;
  logs: string;
}

async function hostsOf(s: Settings): Promise<{ hosts: string[]; error?: string }> {
  try {
    const inventory = s.options.inventory ? await loadInventory(s.options.inventory) : undefined;
    return { hosts: resolveTargets({ hosts: s.options.hosts, limit: s.options.limit, inventory }).map((t) => t.name) };
  } catch (e) {
    return { hosts: s.options.hosts ? s.options.hosts.split(',') : [], error: errorMessage(e) };
  }
}

async function list(g: GlobalOptions): Promise<number> {
  const out = outputFor(g);
  const stateDir = stateDirOf(g);
  let crontab: string | undefined;
  let crontabError: string | undefined;
  try {
    crontab = await readCrontab();
  } catch (e) {
    crontabError = errorMessage(e);
  }
  const entries: ListEntry[] = [];
  const broken: string[] = [];
  for (const name of storedNames(stateDir)) {
    let s: Settings;
    try {
      s = readSettings(stateDir, name);
    } catch (e) {
      broken.push(`${name}: ${errorMessage(e)}`);
      continue;
    }
    const { hosts, error } = await hostsOf(s);
    const dir = logsDir(stateDir, name);
    const newest = runIds(dir)[0];
    const skipped = newest ? outcomeOf(dir, newest, 'schedule-skipped') : undefined;
    entries.push({
      name,
      recipe: s.recipeName,
      recipeFile: s.recipe,
      hosts,
      ...(error ? { hostsError: error } : {}),
      cron: s.cron,
      description: plainWords(s.cron),
      next: nextRuns(s.cron).map((d) => d.toISOString()),
      lastRun: lastRun(stateDir, name) ?? null,
      running: lockHolder(stateDir, name) ?? null,
      lastSkipped: skipped ?? null,
      inCrontab: crontab !== undefined && hasEntry(crontab, name),
      onFailure: s.onFailure ?? null,
      planOnly: s.planOnly === true,
      fleet: fleetOf(s),
      settings: settingsFile(stateDir, name),
      logs: logsDir(stateDir, name),
    });
  }
  const orphans = crontab === undefined ? [] : markedNames(crontab).filter((n) => !entries.some((e) => e.name === n) && !broken.some((b) => b.startsWith(`${n}:`)));

  if (g.json) {
    for (const e of entries) process.stdout.write(JSON.stringify(e) + '\n');
  } else {
    if (!entries.length && !broken.length) out.say(`No schedules in ${stateDir}. Add one with \`hostsmith schedule add <recipe> --cron "<expr>" --hosts …\`.`);
    for (const e of entries) {
      out.say(`${e.name}: recipe ${escapeText(e.recipe)} (${escapeText(e.recipeFile)}) on ${escapeText(e.hosts.join(', ') || '(no hosts)')}`);
      if (e.hostsError) out.say(`  hosts: cannot be resolved now: ${escapeText(e.hostsError)}`);
      out.say(`  when: ${e.cron} — ${e.description}`);
      if (e.planOnly) out.say('  plan only: reads the hosts and changes nothing; drift (something would change) fails the run, exit 2');
      const fleet = Object.entries(e.fleet).map(([flag, v]) => `${flag} ${v}`);
      if (fleet.length) out.say(`  fleet: ${escapeText(fleet.join(' '))}`);
      out.say(`  next: ${e.next.map((d) => localTime(new Date(d))).join(', ')} (${zoneName()})`);
      const last = e.lastRun;
      out.say(
        last
          ? `  last run: ${localTime(new Date(last.started), true)} ${last.status}, exit ${last.exitCode} (run ${last.runId}; log ${escapeText(last.log)})`
          : `  last run: none yet${e.running ? '' : ` (try one now: hostsmith schedule run ${e.name} --state-dir ${escapeText(stateDir)})`}`,
      );
      if (e.running) out.say(`  running now: ${holderText(e.running)}`);
      else if (e.lastSkipped && (!last || e.lastSkipped.started > last.started)) out.say(`  skipped at ${localTime(new Date(e.lastSkipped.started), true)}: the run before was still going`);
      if (e.onFailure) out.say(`  on failure: ${escapeText(e.onFailure)}`);
      if (!e.inCrontab && crontab !== undefined) out.say(`  NOT IN YOUR CRONTAB: cron will not run it. Remove it (hostsmith schedule remove ${e.name}) and add it again.`);
    }
    for (const b of broken) out.warn(`unreadable schedule ${escapeText(b)}`);
    for (const n of orphans)
      out.warn(
        `your crontab has an entry marked "${markerLine(n)}" but ${stateDir} has no such schedule (added with another --state-dir?). Remove it with \`hostsmith schedule remove ${n}\` (with that --state-dir, if any).`,
      );
    if (crontabError) out.warn(`could not read your crontab, so whether cron runs these is not known: ${crontabError}`);
  }
  return 0;
}

async function remove(name: string, g: GlobalOptions): Promise<number> {
  const out = outputFor(g);
  const np = nameProblem(name);
  if (np) throw new InputError(np);
  const stateDir = stateDirOf(g);
  const file = settingsFile(stateDir, name);
  const stored = existsSync(file);
  const crontab = await readCrontab();
  const edit = removeEntry(crontab, name);
  if (!stored && !edit.found) {
    throw new InputError(
      `there is no schedule named ${name}: not in ${stateDir}/schedules and not in your crontab (see \`hostsmith schedule list\`; a schedule added with another --state-dir is removed with that --state-dir)`,
    );
  }
  if (edit.found) await writeCrontab(edit.text);
  if (stored) unlinkSync(file);
  const holder = lockHolder(stateDir, name);
  if (g.json) {
    process.stdout.write(
      JSON.stringify({ event: 'schedule-removed', runId: newRunId(), time: new Date().toISOString(), schedule: name, crontabEntry: edit.found, settings: stored ? file : null }) + '\n',
    );
  } else {
    out.say(
      `Schedule ${name} removed: ${edit.found ? 'its crontab entry is gone (the rest of your crontab is as it was)' : 'it had no crontab entry'}${stored ? ` and its settings file ${file} is deleted` : ''}.`,
    );
    if (edit.found && !edit.job) out.warn(`note: the marker line had no \`schedule run ${name}\` job line under it; only the marker was removed. Check \`crontab -l\` for a job you may have moved.`);
    if (holder) out.say(`A run of it is still going (${holderText(holder)}); it finishes on its own.`);
    out.say(`Its logs stay in ${logsDir(stateDir, name)}; delete that folder when you no longer need them.`);
  }
  return 0;
}

export function registerSchedule(program: Command, ctx: Ctx): void {
  const schedule = program.command('schedule').description('run a recipe from cron: add, list, run, remove scheduled applies');

  const addCmd = schedule
    .command('add')
    .description('check everything a run needs, then add one marked entry to your crontab that applies the recipe on schedule')
    .argument('<recipe>', 'recipe file (YAML)')
    .requiredOption('--cron <expr>', 'when to run: five cron fields ("0 3 * * *") or @daily, @hourly, …')
    .option('--name <name>', "the schedule's name (default: the recipe's name)")
    .option('--on-failure <cmd>', 'shell command to run when a run exits non-zero (gets HOSTSMITH_SCHEDULE, HOSTSMITH_RUN_ID, HOSTSMITH_EXIT_CODE, HOSTSMITH_LOG)')
    .option('--plan-only', 'each run only plans (reads the hosts, changes nothing) and fails with exit 2 when something would change: a drift check');
  // The fleet options are apply's own, so a schedule takes exactly what `apply` takes.
  addFleetOptions(addVarOptions(addTargetOptions(addCmd))).action(async (recipe: string, _o: AddCli, cmd: Command) => {
    ctx.exit(await add(recipe, cmd.optsWithGlobals()));
  });

  schedule
    .command('run')
    .description('what cron calls: apply (or, plan-only, plan) the schedule now, without prompts, logging to the state dir (also for trying it by hand)')
    .argument('<name>', 'schedule name')
    .action(async (name: string, _o: unknown, cmd: Command) => {
      ctx.exit(await run(name, cmd.optsWithGlobals<GlobalOptions>()));
    });

  schedule
    .command('list')
    .description('each schedule: recipe, hosts, when (in words), the next three runs, and how the last run went')
    .action(async (_o: unknown, cmd: Command) => {
      ctx.exit(await list(cmd.optsWithGlobals<GlobalOptions>()));
    });

  schedule
    .command('remove')
    .description('remove a schedule: its crontab entry (nothing else of your crontab) and its settings file')
    .argument('<name>', 'schedule name')
    .action(async (name: string, _o: unknown, cmd: Command) => {
      ctx.exit(await remove(name, cmd.optsWithGlobals<GlobalOptions>()));
    });

  schedule.commands.forEach((c) => c.exitOverride());
}
