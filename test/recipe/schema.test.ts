import { describe, expect, it } from 'vitest';
import { parseDuration } from '../../src/duration.js';
import { cronProblem, formatPath, YamlSource } from '../../src/recipe/schema.js';

describe('parseDuration', () => {
  it.each([
    ['500ms', 500],
    ['2s', 2000],
    ['5m', 300_000],
    ['1h30m', 5_400_000],
    ['1.5s', 1500],
    ['1d', 86_400_000],
    [30, 30_000],
    [0.25, 250],
    ['45', 45_000],
    [' 2s ', 2000],
  ] as const)('%j → %i ms', (v, ms) => {
    expect(parseDuration(v)).toBe(ms);
  });
  it.each(['5 minutes', '5x', '', 'm', '-1s', -1, null, true, '1h 30m'])('%j is not a duration', (v) => {
    expect(parseDuration(v)).toBeUndefined();
  });
});

describe('cronProblem', () => {
  it.each(['0 3 * * *', '*/5 * * * MON-FRI', '0 0 1 jan,jul *', '15 2 * * 0', '@daily', '@hourly', '@weekly', '@monthly', '@yearly', '@annually'])('%s is fine', (expr) => {
    expect(cronProblem(expr)).toBeUndefined();
  });
  it.each([
    ['61 * * * *', 'invalid cron schedule "61 * * * *": Constraint error, got value 61 expected range 0-59'],
    ['0 0 3 * * *', 'a cron schedule has five fields (minute, hour, day of month, month, day of week), got 6'],
    ['* * *', 'a cron schedule has five fields (minute, hour, day of month, month, day of week), got 3'],
    ['0 0 L * *', 'invalid cron schedule "0 0 L * *": "L" is not allowed in the day of month field'],
    ['0 0 ? * 1#2', 'invalid cron schedule "0 0 ? * 1#2": "?" is not allowed in the day of month field'],
    ['0 0 * * MUN', 'invalid cron schedule "0 0 * * MUN": "MUN" is not allowed in the day of week field'],
    ['@reboot', '@reboot has no run times and is not supported; give a time schedule'],
    ['@nightly', 'unknown schedule "@nightly" (use five fields or one of @yearly, @annually, @monthly, @weekly, @daily, @hourly)'],
  ])('%s: %s', (expr, message) => {
    expect(cronProblem(expr)).toBe(message);
  });
});

describe('formatPath', () => {
  it.each([
    [['steps', 2, 'template', 'mode'], 'steps[2].template.mode'],
    [['vars', 'server_name'], 'vars.server_name'],
    [['steps', 0, 'command', 'env', 'MY VAR'], 'steps[0].command.env["MY VAR"]'],
    [[], ''],
  ] as const)('%j → %s', (path, text) => {
    expect(formatPath(path)).toBe(text);
  });
});

describe('YamlSource positions', () => {
  const src = new YamlSource(
    'r.yml',
    ['name: r', 'steps:', '  - name: A', '    command: { run: "echo {{x}}" }', '    script: |', '      one', '      two {{y}}', 'anchor: &a { k: 1 }', 'alias: *a'].join('\n'),
  );

  it('locates values, keys and parents', () => {
    expect(src.pos(['steps', 0, 'command', 'run'])).toEqual({ line: 4, col: 21 });
    expect(src.pos(['steps', 0, 'command'], 'key')).toEqual({ line: 4, col: 5 });
    expect(src.pos(['steps', 0, 'command', 'creates'], 'parent')).toEqual({ line: 4, col: 5 });
    expect(src.pos(['steps', 0, 'nope'], 'parent')).toEqual({ line: 3, col: 5 });
    expect(src.pos(['alias', 'k'])).toEqual({ line: 8, col: 17 });
  });

  it('maps a position inside a string to the file, for quoted strings and literal blocks', () => {
    expect(src.posInString(['steps', 0, 'command', 'run'], 1, 7)).toEqual({ line: 4, col: 29 });
    expect(src.posInString(['steps', 0, 'script'], 2, 6)).toEqual({ line: 7, col: 13 });
  });

  it('turns a YAML syntax error into an issue', () => {
    expect(new YamlSource('bad.yml', 'a: [1, 2\nb: 3\n').errors[0]).toMatchObject({ file: 'bad.yml', line: 2, message: expect.stringMatching(/^invalid YAML: /) });
  });
});
