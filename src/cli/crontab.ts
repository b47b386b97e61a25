/**
 * The invoking user's crontab, through the `crontab` command (so it works for any user and cron
 * makes its own checks), and the pure text edits `schedule add` and `remove` make to it: one
 * marker line `# hostsmith-schedule: <name>` with the job line right below it. Every other byte
 * of the crontab is kept as it was.
 */
import { spawn } from 'node:child_process';
import { HostsmithError } from '../errors.js';

export const MARKER_PREFIX = '# hostsmith-schedule: ';

export function markerLine(name: string): string {
  return `${MARKER_PREFIX}${name}`;
}

/** A line as cron splits them: the text and its line break ('' for a last line without one). */
interface Line {
  text: string;
  eol: string;
}

function splitLines(text: string): Line[] {
  const out: Line[] = [];
  let at = 0;
  while (at < text.length) {
    const nl = text.indexOf('\n', at);
    if (nl < 0) {
      out.push({ text: text.slice(at), eol: '' });
      break;
    }
    out.push({ text: text.slice(at, nl), eol: '\n' });
    at = nl + 1;
  }
  return out;
}

/** The marker line (trailing spaces and a CR tolerated) names this schedule. */
function isMarker(line: string, name?: string): boolean {
  const t = line.replace(/[ \t\r]+$/, '');
  if (!t.startsWith(MARKER_PREFIX)) return false;
  return name === undefined || t.slice(MARKER_PREFIX.length) === name;
}

/** The job line below a marker belongs to it when it runs `schedule run <name>` (not a comment or a blank). */
function isJobFor(line: string | undefined, name: string): boolean {
  if (line === undefined || /^\s*#/.test(line)) return false;
  const quoted = [name, shellQuote(name)].map((n) => n.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  return new RegExp(`\\sschedule run (${quoted.join('|')})(\\s|$)`).test(line);
}

/** Names of every marked schedule in the crontab, in order. */
export function markedNames(text: string): string[] {
  return splitLines(text)
    .filter((l) => isMarker(l.text))
    .map((l) => l.text.replace(/[ \t\r]+$/, '').slice(MARKER_PREFIX.length));
}

export function hasEntry(text: string, name: string): boolean {
  return splitLines(text).some((l) => isMarker(l.text, name));
}

/**
 * The crontab with the schedule's marker and job line appended. A crontab whose last line has no
 * line break gets one first (cron would otherwise read that line and the marker as one).
 */
export function addEntry(text: string, name: string, jobLine: string): string {
  if (/[\r\n]/.test(jobLine) || /[\r\n]/.test(name)) throw new Error('a crontab entry must be one line');
  if (hasEntry(text, name)) throw new Error(`the crontab already has an entry for schedule ${name}`);
  const sep = text && !text.endsWith('\n') ? '\n' : '';
  return `${text}${sep}${markerLine(name)}\n${jobLine}\n`;
}

/**
 * The crontab without the schedule's marker line and the job line under it; everything else —
 * comments, blank lines, other jobs, a last line without a line break — byte for byte.
 * `found` says whether there was a marker; `job` whether a job line under it went too.
 */
export function removeEntry(text: string, name: string): { text: string; found: boolean; job: boolean } {
  const lines = splitLines(text);
  const keep: Line[] = [];
  let found = false;
  let job = false;
  for (let i = 0; i < lines.length; i++) {
    if (isMarker(lines[i]!.text, name)) {
      found = true;
      if (isJobFor(lines[i + 1]?.text, name)) {
        job = true;
        i++;
      }
      continue;
    }
    keep.push(lines[i]!);
  }
  return { text: keep.map((l) => l.text + l.eol).join(''), found, job };
}

/** A word for /bin/sh: single-quoted unless it is plainly safe. */
export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_/.,:=+@-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The job line: the schedule, then the command with `%` escaped (cron turns a bare % into a line break). */
export function jobLine(expr: string, argv: string[]): string {
  for (const a of argv) if (/[\r\n\0]/.test(a)) throw new HostsmithError(`cannot put ${JSON.stringify(a)} on a crontab line: it holds a line break`, 2);
  return `${expr.trim()} ${argv.map(shellQuote).join(' ').replace(/%/g, '\\%')}`;
}

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

function crontabCmd(args: string[], input?: string): Promise<Ran> {
  return new Promise((res, rej) => {
    // C locale: "no crontab for <user>" is recognised by its words.
    const child = spawn('crontab', args, { env: { ...process.env, LC_ALL: 'C', LANG: 'C' }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (e: NodeJS.ErrnoException) =>
      rej(e.code === 'ENOENT' ? new HostsmithError('the `crontab` command was not found: install cron (on Debian: apt-get install cron) and start its daemon; nothing was changed', 1) : e),
    );
    child.on('close', (code) => res({ code: code ?? 1, stdout, stderr }));
    child.stdin.on('error', () => {});
    child.stdin.end(input ?? '');
  });
}

/** The user's crontab as `crontab -l` prints it; no crontab at all is an empty one. */
export async function readCrontab(): Promise<string> {
  const r = await crontabCmd(['-l']);
  if (r.code === 0) return r.stdout;
  if (/no crontab for/i.test(r.stderr)) return '';
  throw new HostsmithError(`could not read your crontab (crontab -l exited ${r.code}): ${r.stderr.trim() || 'no message'}`, 1);
}

/** Installs `text` as the user's crontab with `crontab -` (cron checks it and may refuse it). */
export async function writeCrontab(text: string): Promise<void> {
  const r = await crontabCmd(['-'], text);
  if (r.code !== 0) throw new HostsmithError(`cron refused the new crontab (crontab - exited ${r.code}): ${r.stderr.trim() || 'no message'}; your crontab was not changed`, 1);
}
