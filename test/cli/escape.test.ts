import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { escapeText } from '../../src/cli/escape.js';
import { nextSteps, Output } from '../../src/cli/output.js';
import type { RunEvent } from '../../src/engine/events.js';
import type { RunReport } from '../../src/engine/fleet.js';

/** Any byte a terminal could act on, other than newline and tab. */
const RAW_CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

describe('escapeText', () => {
  it.each([
    ['plain text, ünïcode and emoji 🚀', 'plain text, ünïcode and emoji 🚀'],
    ['\x1b]0;pwned\x07\x1b[2J', '\\x1b]0;pwned\\x07\\x1b[2J'],
    ['over\rwrite', 'over\\rwrite'],
    ['nul\x00 bs\x08 vt\x0b ff\x0c del\x7f', 'nul\\x00 bs\\x08 vt\\x0b ff\\x0c del\\x7f'],
    ['c1 csi\u009b31m nel\u0085 st\u009c', 'c1 csi\\x9b31m nel\\x85 st\\x9c'],
    ['evil\u202etxt.exe', 'evil\\u202etxt.exe'],
    ['\u2066iso\u2069 \u200fmark\u200e \u061c', '\\u2066iso\\u2069 \\u200fmark\\u200e \\u061c'],
    ['line\u2028sep\u2029para', 'line\\u2028sep\\u2029para'],
    ['a\tb', 'a\tb'],
    ['one\ntwo', 'one\\ntwo'],
    ['C:\\path \\x1b stays', 'C:\\path \\x1b stays'],
  ])('%j → %j', (input, shown) => {
    expect(escapeText(input)).toBe(shown);
    expect(escapeText(input)).not.toMatch(RAW_CONTROL);
  });

  it('multiline keeps newlines (diffs, errors) but not CR or ESC', () => {
    expect(escapeText('-old\r\n+new\x1b[31m\n', { multiline: true })).toBe('-old\\r\n+new\\x1b[31m\n');
  });

  it('tabs: false escapes tabs too (table cells)', () => {
    expect(escapeText('a\tb\nc', { tabs: false })).toBe('a\\tb\\nc');
  });
});

function capture(): { stream: Writable; text: () => string } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      chunks.push(String(chunk));
      cb();
    },
  });
  return { stream, text: () => chunks.join('') };
}

const EVIL = '\x1b]0;pwned\x07\x1b[2J';
const base = { runId: 'r1', time: '2024-01-01T00:00:00Z' };
const events: RunEvent[] = [
  { ...base, event: 'run-started', recipe: `rec${EVIL}`, mode: 'plan', hosts: ['h1'] },
  { ...base, event: 'host-connected', host: 'h1', facts: { user: `root${EVIL}`, os: { id: 'debian\r', version_id: '12' }, arch: 'x86_64\u202e' } },
  {
    ...base,
    event: 'step-finished',
    host: 'h1',
    step: `Step${EVIL}`,
    type: 'line',
    status: 'failed',
    summary: `replace line 1 "${EVIL}"`,
    diff: `--- a\n+++ b\n-old${EVIL}\n+new\r\n same\n`,
    irreversible: false,
    durationMs: 5,
    error: `command exited 1: first${EVIL}\nsecond\u009b2J`,
  },
  { ...base, event: 'rollback-finished', host: 'h1', step: 'S', type: 'file', status: 'rollback-failed', error: `rm said ${EVIL}` },
  {
    ...base,
    event: 'host-finished',
    host: 'h1',
    status: 'failed',
    error: `h1: host is locked by another hostsmith run (${EVIL})`,
    durationMs: 1,
    changed: 0,
    unchanged: 0,
    skipped: 0,
    failed: 1,
    rolledBack: 0,
  },
];

describe('Output: foreign text reaches the terminal escaped', () => {
  it('human output has no raw control bytes, keeps the diff on separate lines, shows what was sent', () => {
    const out = capture();
    const err = capture();
    const o = new Output({ json: false, color: false, verbose: true, tty: false, out: out.stream, err: err.stream });
    events.forEach((e) => o.event(e));
    const text = out.text() + err.text();
    expect(text).not.toMatch(RAW_CONTROL);
    expect(text).toContain('recipe rec\\x1b]0;pwned\\x07\\x1b[2J on h1');
    expect(text).toContain('connected as root\\x1b]0;pwned\\x07\\x1b[2J (debian\\r 12, x86_64\\u202e)');
    expect(text).toContain('Step\\x1b]0;pwned\\x07\\x1b[2J');
    expect(text).toContain('error: command exited 1: first\\x1b]0;pwned\\x07\\x1b[2J\nsecond\\x9b2J');
    expect(text).toMatch(/\n\s+-old\\x1b\]0;pwned\\x07\\x1b\[2J\n\s+\+new\\r\n\s+ same\n/);
    expect(text).toContain('FAILED: rm said \\x1b');
    expect(text).toContain('h1: failed: host is locked by another hostsmith run (\\x1b]0;pwned');
  });

  it('colours are still ours: the only ESC bytes in coloured output are SGR codes hostsmith wrote', () => {
    const out = capture();
    const o = new Output({ json: false, color: true, verbose: true, tty: false, out: out.stream, err: out.stream });
    events.forEach((e) => o.event(e));
    const text = out.text();
    expect(text).toContain('\x1b[31m');
    expect(text.replace(/\x1b\[\d+m/g, '')).not.toMatch(RAW_CONTROL);
  });

  it('--json: every line parses back to the same text, with no raw control bytes below U+0080', () => {
    const out = capture();
    const o = new Output({ json: true, color: false, verbose: false, tty: false, out: out.stream, err: out.stream });
    events.forEach((e) => o.event(e));
    const lines = out.text().trimEnd().split('\n');
    expect(lines).toHaveLength(events.length);
    expect(out.text().replace(/\n/g, '')).not.toMatch(/[\x00-\x1f]/);
    expect(lines.map((l) => JSON.parse(l))).toEqual(events);
  });

  it('an ok host that carries an error (its lock left in place) says so', () => {
    const out = capture();
    const o = new Output({ json: false, color: false, verbose: false, tty: false, out: out.stream, err: out.stream });
    o.event({
      ...base,
      event: 'host-finished',
      host: 'h1',
      status: 'ok',
      error: `h1; the run lock /run/hostsmith/lock no longer names this run (it says: run=x${EVIL})`,
      durationMs: 1,
      changed: 1,
      unchanged: 0,
      skipped: 0,
      failed: 0,
      rolledBack: 0,
    });
    expect(out.text()).toBe('h1: ok: h1; the run lock /run/hostsmith/lock no longer names this run (it says: run=x\\x1b]0;pwned\\x07\\x1b[2J)\n');
  });

  it('next steps quote host errors escaped', () => {
    const report: RunReport = {
      runId: 'r1',
      mode: 'apply',
      status: 'failed',
      exitCode: 1,
      durationMs: 1,
      hosts: { h1: { status: 'failed', changed: 0, unchanged: 0, skipped: 0, failed: 1, rolledBack: 0, durationMs: 1, error: `h1: locked (${EVIL})` } },
      sources: {},
    };
    const lines = nextSteps(report);
    expect(lines.join('\n')).not.toMatch(RAW_CONTROL);
    expect(lines[0]).toBe('h1: failed before changing anything. locked (\\x1b]0;pwned\\x07\\x1b[2J)');
  });
});
