/**
 * Start-up (issue 10, item 3): a command loads only the code it uses. `--version` loads no
 * command at all; `plan` on this machine without a terminal loads neither the prompts
 * (inquirer), nor the spinner (ora), nor SSH (ssh2). Checked by running the built CLI with a
 * module hook that records every module it resolves.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../e2e/cli.js';

const HEAVY = ['/node_modules/ora/', '/node_modules/@inquirer/', '/node_modules/ssh2/'];

/** Runs the built CLI; returns every module URL it resolved. */
function loaded(args: string[]): { code: number | null; urls: string[] } {
  const dir = mkdtempSync(join(tmpdir(), 'hostsmith-startup-'));
  const log = join(dir, 'resolved.txt');
  writeFileSync(
    join(dir, 'hooks.mjs'),
    `import { appendFileSync } from 'node:fs';\nexport async function resolve(s, c, next) { const r = await next(s, c); appendFileSync(${JSON.stringify(log)}, r.url + '\\n'); return r; }\n`,
  );
  writeFileSync(join(dir, 'register.mjs'), `import { register } from 'node:module';\nregister(${JSON.stringify(`file://${join(dir, 'hooks.mjs')}`)});\n`);
  writeFileSync(log, '');
  writeFileSync(join(dir, 'r.yml'), 'name: t\nsteps:\n  - name: F\n    file: { path: /nonexistent-hostsmith/x, content: "x" }\n');
  const r = spawnSync(process.execPath, ['--import', join(dir, 'register.mjs'), join(ROOT, 'bin/hostsmith.js'), ...args.map((a) => a.replace('$DIR', dir))], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NO_COLOR: '1' },
  });
  return { code: r.status, urls: readFileSync(log, 'utf8').split('\n').filter(Boolean) };
}

const heavy = (urls: string[]) => urls.filter((u) => HEAVY.some((h) => u.includes(h)));

describe('start-up loads only what the command uses', () => {
  it('--version loads no command module and nothing heavy', () => {
    const r = loaded(['--version']);
    expect(r.code).toBe(0);
    expect(heavy(r.urls)).toEqual([]);
    expect(r.urls.filter((u) => u.includes('/dist/cli/commands/'))).toEqual([]);
  });

  it('plan on this machine without a terminal loads no prompts, spinner or SSH', () => {
    const r = loaded(['plan', '$DIR/r.yml', '--hosts', 'local', '--state-dir', '$DIR/state']);
    expect(r.code).toBe(0);
    expect(r.urls.some((u) => u.endsWith('/dist/cli/commands/run.js'))).toBe(true);
    expect(heavy(r.urls)).toEqual([]);
    expect(r.urls.filter((u) => /\/dist\/cli\/commands\/(bootstrap|schedule|undo|recover)\.js$/.test(u))).toEqual([]);
  });

  it('a command still loads its own module: bootstrap (which then says it needs a terminal)', () => {
    const r = loaded(['bootstrap']);
    expect(r.code).toBe(2);
    expect(r.urls.some((u) => u.includes('/dist/cli/commands/bootstrap.js'))).toBe(true);
  });
});
