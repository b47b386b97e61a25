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

/**
 * The CLI runs as a bundle (dist/bundle): each module it imports lazily is a chunk of its own,
 * named after it (run-<hash>.js, ora-<hash>.js); ssh2 and the prompts stay in node_modules.
 */
const HEAVY = [/\/dist\/bundle\/(ora|log-update)-[A-Z0-9]+\.js$/, /\/node_modules\/@inquirer\//, /\/node_modules\/ssh2\//];
const chunk = (name: string) => new RegExp(`/dist/bundle/${name}-[A-Z0-9]+\\.js$`);

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

const heavy = (urls: string[]) => urls.filter((u) => HEAVY.some((h) => h.test(u)));
const COMMANDS = /\/dist\/bundle\/(run|bootstrap|schedule|undo|recover|history|show|prune|validate)-[A-Z0-9]+\.js$/;

describe('start-up loads only what the command uses', () => {
  it('--version loads no command module and nothing heavy', () => {
    const r = loaded(['--version']);
    expect(r.code).toBe(0);
    expect(heavy(r.urls)).toEqual([]);
    expect(r.urls.some((u) => u.endsWith('/dist/bundle/cli/main.js'))).toBe(true);
    expect(r.urls.filter((u) => COMMANDS.test(u))).toEqual([]);
  });

  it('plan on this machine without a terminal loads no prompts, spinner or SSH', () => {
    const r = loaded(['plan', '$DIR/r.yml', '--hosts', 'local', '--state-dir', '$DIR/state']);
    expect(r.code).toBe(0);
    expect(r.urls.some((u) => chunk('run').test(u))).toBe(true);
    expect(heavy(r.urls)).toEqual([]);
    expect(r.urls.filter((u) => /\/dist\/bundle\/(bootstrap|schedule|undo|recover)-[A-Z0-9]+\.js$/.test(u))).toEqual([]);
  });

  it('a command still loads its own module: bootstrap (which then says it needs a terminal)', () => {
    const r = loaded(['bootstrap']);
    expect(r.code).toBe(2);
    expect(r.urls.some((u) => chunk('bootstrap').test(u))).toBe(true);
  });
});
