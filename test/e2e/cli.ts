/** Runs the built CLI as a user would, and writes fixture recipes to temp folders. */
import { spawn } from 'node:child_process';
import { get } from 'node:http';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Sandbox } from '../hosts/hosts.js';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = join(ROOT, 'bin/hostsmith.js');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout parsed as JSON lines (when --json). */
  events: Array<Record<string, any>>;
}

export interface CliOptions {
  input?: string;
  env?: Record<string, string>;
  cwd?: string;
  /** Called with the child once it is running (to send signals). */
  onSpawn?: (child: import('node:child_process').ChildProcess) => void;
}

export function hostsmith(args: string[], o: CliOptions = {}): Promise<CliResult> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: o.cwd ?? ROOT,
      env: { ...process.env, NO_COLOR: '1', ...o.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', rej);
    child.on('close', (code) => {
      const events = stdout
        .split('\n')
        .filter((l) => l.trim().startsWith('{'))
        .map((l) => JSON.parse(l));
      res({ code: code ?? -1, stdout, stderr, events });
    });
    child.stdin.end(o.input ?? '');
    o.onSpawn?.(child);
  });
}

/** A temp folder with the given files (paths relative to it); returns its path. */
export function fixture(files: Record<string, string | Buffer>): string {
  const dir = mkdtempSync(join(tmpdir(), 'hostsmith-e2e-'));
  for (const [p, content] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, p)), { recursive: true });
    writeFileSync(join(dir, p), content);
  }
  return dir;
}

/** The options that point the CLI at a sandbox: inventory, known_hosts, a private state dir. */
export function sandboxArgs(sb: Sandbox, stateDir: string): string[] {
  return ['-i', sb.inventoryPath, '--known-hosts', sb.knownHostsPath, '--state-dir', stateDir];
}

/** Every journal line of every run in a state dir. */
export function journalText(stateDir: string): string {
  const dir = join(stateDir, 'runs');
  try {
    return readdirSync(dir)
      .map((f) => readFileSync(join(dir, f), 'utf8'))
      .join('');
  } catch {
    return '';
  }
}

/** With --json, stdout must be JSON lines and nothing else: throws on any other line. */
export function onlyJsonLines(r: CliResult): number {
  const lines = r.stdout.split('\n').filter((l) => l !== '');
  for (const l of lines) JSON.parse(l);
  return lines.length;
}

export function stepEvents(r: CliResult, host?: string): Array<Record<string, any>> {
  return r.events.filter((e) => e.event === 'step-finished' && (!host || e.host === host));
}

/**
 * Runs the CLI on a real pseudo-terminal (script(1)), typing each answer when the screen first
 * matches its pattern, as a person would. Resolves with the exit code and everything shown.
 */
export function onTerminal(args: string[], answers: Array<[RegExp, string]>, o: { env?: Record<string, string>; timeoutMs?: number; cwd?: string } = {}): Promise<{ code: number; screen: string }> {
  const cmd = [process.execPath, BIN, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  return new Promise((res, rej) => {
    // exec: hostsmith itself is the pty's child, so the exit status is its own and no shell
    // between them takes part in the Ctrl-C that the test types.
    const child = spawn('script', ['-qfec', `stty cols 120 rows 40; exec ${cmd}`, '/dev/null'], { env: { ...process.env, TERM: 'xterm', NO_COLOR: '1', ...o.env }, cwd: o.cwd ?? ROOT });
    let screen = '';
    let next = 0;
    child.stdout.on('data', (d: Buffer) => {
      screen += d.toString();
      while (next < answers.length && answers[next]![0].test(screen)) child.stdin.write(answers[next++]![1]);
    });
    child.on('error', rej);
    const kill = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 60_000);
    child.on('close', (code) => {
      clearTimeout(kill);
      res({ code: code ?? -1, screen });
    });
  });
}

/** A plain HTTP GET, for checking what a host serves. */
export function httpGet(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    get(url, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}
