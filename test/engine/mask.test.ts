import { describe, expect, it } from 'vitest';
import { MIN_SAFE_SECRET, Masker, secretPieces } from '../../src/engine/mask.js';
import { shortSecretWarnings } from '../../src/cli/context.js';
import { quote } from '../../src/shell/script.js';

/**
 * Every way a value gets serialised on the way out — once, twice, as a shell word, and mixes —
 * with how to read the masked text back, so what a reader would see is checked too.
 */
const unjson = (n: number) => (s: string) => {
  let out: unknown = s;
  for (let i = 0; i < n; i++) out = JSON.parse(out as string);
  return out as string;
};
const encodings: Array<[string, (s: string) => string, (s: string) => string]> = [
  ['raw', (s) => s, (s) => s],
  ['JSON string', (s) => JSON.stringify(s), unjson(1)],
  ['JSON twice', (s) => JSON.stringify(JSON.stringify(s)), unjson(2)],
  ['JSON three times', (s) => JSON.stringify(JSON.stringify(JSON.stringify(s))), unjson(3)],
  ['shell word', (s) => quote(s), (s) => s],
  ['shell word in JSON', (s) => JSON.stringify(quote(s)), unjson(1)],
  ['inside a longer shell word', (s) => quote(`PASSWORD=${s};`), (s) => s],
  ['inside a longer shell word in JSON', (s) => JSON.stringify(quote(`PASSWORD=${s};`)), unjson(1)],
];

const nasty = ['pa"ss', 'back\\slash', 'both"\\mixed', "it's", 'tab\there', 'ünïcødé✓', '\u0001ctl', 'new\nline'];

describe('Masker.text: every escaped form of a secret is masked', () => {
  for (const secret of nasty) {
    it.each(encodings)(`${JSON.stringify(secret)} %s`, (_name, enc, dec) => {
      const m = new Masker([secret]);
      const out = m.text(enc(secret));
      // Still readable the way it was written (the mask never cuts an escape in half), and the
      // secret is gone both from the text and from what a reader decodes from it.
      const decoded = dec(out);
      for (const piece of secretPieces(secret)) {
        expect(out).not.toContain(piece);
        expect(decoded).not.toContain(piece);
      }
      expect(decoded).toContain('***');
      expect(m.text(`before ${enc(secret)} after`)).toMatch(/^before .*\*\*\*.* after$/s);
    });
  }
});

describe('Masker.value: masks inside string values, before any serialising', () => {
  it.each(nasty)('%j survives any number of stringify rounds masked', (secret) => {
    const m = new Masker([secret]);
    const event = { event: 'step-finished', summary: `replace line 1 with ${JSON.stringify(`PASSWORD=${secret}`)}`, nested: { list: [`x${secret}y`, { deep: secret }] } };
    const masked = m.value(event);
    let text = JSON.stringify(masked);
    for (let i = 0; i < 3; i++) {
      for (const piece of secretPieces(secret)) {
        expect(text).not.toContain(piece);
        expect(text).not.toContain(JSON.stringify(piece).slice(1, -1));
      }
      text = JSON.stringify(text);
    }
    expect(masked.nested.list[0]).toBe('x***y');
    expect(masked.nested.list[1]).toEqual({ deep: '***' });
  });

  it('leaves keys, numbers, booleans and null alone and keeps the shape', () => {
    const m = new Masker(['hunter2']);
    const v = { hunter2: 'hunter2', n: 42, b: true, z: null, a: [1, 'a hunter2'] };
    expect(m.value(v)).toEqual({ hunter2: '***', n: 42, b: true, z: null, a: [1, 'a ***'] });
  });

  it('masks what JSON.stringify would write for a Date or a Buffer', () => {
    const m = new Masker(['2020']);
    expect(m.value({ d: new Date('2020-01-02T00:00:00.000Z') })).toEqual({ d: '***-01-02T00:00:00.000Z' });
    expect(m.value({ b: Buffer.from('x') })).toEqual({ b: { type: 'Buffer', data: [120] } });
  });

  it('a shell-quoted secret in a command is masked whole, quotes included', () => {
    const m = new Masker([`pa$$-W0'rd"q`]);
    expect(m.text(`echo ${quote(`pa$$-W0'rd"q`)} >&2`)).toBe('echo *** >&2');
    expect(m.text(`echo ${quote(`PW=pa$$-W0'rd"q`)}`)).toBe(`echo 'PW=***'`);
  });

  it('returns the value as is when there are no secrets', () => {
    const v = { a: 'x' };
    expect(new Masker([]).value(v)).toBe(v);
  });
});

describe('multi-line secrets', () => {
  const key = '-----BEGIN KEY-----\nAAAAlineone\nBBBBlinetwo\n\n-----END KEY-----\n';

  it('splits into the value as it is and trimmed at either end, and each non-blank line', () => {
    expect(secretPieces(key)).toEqual([key, key.trimEnd(), '-----BEGIN KEY-----', 'AAAAlineone', 'BBBBlinetwo', '-----END KEY-----']);
    expect(secretPieces('one\r\ntwo\r\n')).toEqual(['one\r\ntwo\r\n', 'one\r\ntwo', 'one', 'two']);
    expect(secretPieces('single')).toEqual(['single']);
    // An error's text is trimmed before it is shown: a secret with leading blanks is found trimmed too.
    expect(secretPieces('  lead and trail ')).toEqual(['  lead and trail ', '  lead and trail', 'lead and trail ', 'lead and trail']);
    expect(secretPieces('   ')).toEqual(['   ']);
    expect(secretPieces('')).toEqual([]);
  });

  it.each([
    ['the whole value, trimmed', key.trim()],
    ['a tail that starts mid-value', `error: ${key.split('\n').slice(2).join('\n')}`],
    ['one line of it, indented', `   BBBBlinetwo   `],
    ['the lines JSON-escaped', JSON.stringify(`x\n${key}`)],
    ['with CRLF line ends', key.replace(/\n/g, '\r\n')],
  ])('masks %s', (_n, text) => {
    const out = new Masker([key]).text(text);
    for (const l of ['AAAAlineone', 'BBBBlinetwo', 'BEGIN KEY', 'END KEY']) expect(out).not.toContain(l);
  });
});

describe('short secrets do not break structure', () => {
  const entry = {
    kind: 'step-finished',
    time: '2025-12-01T10:20:30.040Z',
    runId: '20251201T102030Z-0a1b2c',
    host: 'h1',
    step: 'Set 1 password',
    status: 'changed',
    summary: '/etc/app.conf: replace line 10 with "PW=0"',
    durationMs: 1010,
    pre: '0a'.repeat(32),
    post: '01'.repeat(32),
    counts: { changed: 0, unchanged: 1, skipped: 0, failed: 0, rolledBack: 10 },
    params: { path: '/etc/app.conf', mode: 0o600, rendered: `sha256:${'0'.repeat(64)} (10 bytes)` },
    undo: { previous: { backup: '/x/b', sha256: '10'.repeat(32) } },
    hosts: ['h1', 'h10'],
  };

  it.each(['0', '1', ':', ',', '"', '\\', '{', '0"', '.'])('secret %j: still parses, numbers and structural fields intact', (secret) => {
    const m = new Masker([secret]);
    const line = JSON.stringify(m.value(entry));
    const back = JSON.parse(line) as typeof entry;
    for (const k of ['kind', 'time', 'runId', 'host', 'step', 'status', 'pre', 'post', 'durationMs', 'counts', 'hosts'] as const) expect(back[k]).toEqual(entry[k]);
    expect(back.params.mode).toBe(0o600);
    expect(back.params.rendered).toBe(entry.params.rendered);
    expect(back.undo.previous.sha256).toBe(entry.undo.previous.sha256);
    // The free text is masked all the same.
    if (entry.summary.includes(secret)) expect(back.summary).toContain('***');
  });

  it('a whole journal file of such lines parses line by line', () => {
    const m = new Masker(['0', ':']);
    const lines = [entry, { ...entry, kind: 'run-finished', exitCode: 0 }].map((e) => JSON.stringify(m.value(e)));
    for (const l of lines) expect(() => JSON.parse(l)).not.toThrow();
  });
});

describe('shortSecretWarnings', () => {
  const recipe = {
    vars: {
      pw: { name: 'pw', secret: true },
      key: { name: 'key', secret: true },
      open: { name: 'open', secret: false },
    },
  } as unknown as Parameters<typeof shortSecretWarnings>[0];

  it('names each secret var with a value (or a line of one) shorter than the safe length, never the value', () => {
    const w = shortSecretWarnings(recipe, [{ pw: '0', key: 'long enough\nab\n', open: 'x' }, { pw: 'fine-here' }]);
    expect(w).toHaveLength(2);
    expect(w[0]).toMatch(/secret var "pw".*shorter than 4 characters/);
    expect(w[1]).toMatch(/secret var "key"/);
    expect(w.join('\n')).not.toMatch(/long enough|"0"/);
    expect(MIN_SAFE_SECRET).toBe(4);
  });

  it('says nothing for long secrets, unset ones and non-secret vars', () => {
    expect(shortSecretWarnings(recipe, [{ pw: 'hunter22', open: 'x' }])).toEqual([]);
    expect(shortSecretWarnings(recipe, [{ pw: ['abcd', { n: 12345 }] }])).toEqual([]);
    expect(shortSecretWarnings(recipe, [{ pw: ['abcd', { n: 12 }] }])).toHaveLength(1);
  });
});
