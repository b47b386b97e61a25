/**
 * Every example recipe in recipes/ proved by `hostsmith test` at every stage, on throwaway hosts
 * it starts itself: converge, idempotence, apply then undo to zero residue, a saved plan applied
 * exactly, a failure injected after each step rolled back to zero residue, a controller killed
 * and recovered to zero residue. The recipes are listed from the folder, so a new one is covered
 * without touching this file. (A file of its own, so that it runs beside examples.test.ts.)
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { describeHosts } from '../hosts/use-sandbox.js';
import { hostsmith, ROOT } from './cli.js';

const RECIPES = readdirSync(join(ROOT, 'recipes'))
  .filter((f) => /\.ya?ml$/.test(f))
  .sort();

/** A public key to hand to a recipe that installs one (made here, thrown away). */
function publicKey(): string {
  const dir = mkdtempSync(join(tmpdir(), 'hostsmith-key-'));
  const r = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'admin@example', '-f', join(dir, 'k')]);
  if (r.status !== 0) throw new Error(`ssh-keygen failed: ${r.stderr}`);
  return readFileSync(join(dir, 'k.pub'), 'utf8').trim();
}

/**
 * The vars a recipe needs (as --var name=value). A recipe with a required var that is not given
 * here fails its test with exit 2, which is the reminder to add it.
 */
const VARS: Record<string, () => string[]> = {
  'admin-user': () => [`admin_key=${publicKey()}`],
};

/** The top-level step names of an example recipe, read as YAML (not through hostsmith). */
function loadYamlSteps(file: string): string[] {
  const doc = parseYaml(readFileSync(join(ROOT, 'recipes', file), 'utf8')) as { steps?: Array<{ name: string }> };
  return (doc.steps ?? []).map((s) => s.name);
}

const tail = (r: { stdout: string; stderr: string }) => `${r.stderr}\n${r.stdout.slice(-4000)}`;

describeHosts('the example recipes, proved by hostsmith test', () => {
  for (const file of RECIPES) {
    const name = file.replace(/\.ya?ml$/, '');
    it(`${name}: hostsmith test holds at every stage — converge, idempotence, undo, saved plan, rollback after each step, recover after a kill`, async () => {
      const vars = (VARS[name]?.() ?? []).flatMap((v) => ['--var', v]);
      // The kill lands right after the first change's step-started entry (entries 1-3 are the run's
      // and the host's): a change in flight, every time. Random moments are hostsmith test's own
      // default; a test that must not flake pins one.
      const r = await hostsmith(['test', `recipes/${file}`, '--json', ...vars], { env: { HOSTSMITH_TEST_KILL_AT_WRITE: '4' } });
      const stages = r.events.filter((e) => e.event === 'test-stage');
      for (const s of stages) expect.soft(s.ok, JSON.stringify(s)).toBe(true);
      expect(r.code, tail(r)).toBe(0);
      expect(
        stages
          .filter((s) => s.stage === 'rollback')
          .map((s) => s.step)
          .sort(),
      ).toEqual([...loadYamlSteps(file)].sort());
      for (const stage of ['converge', 'idempotence', 'undo', 'plan', 'recover']) expect(stages.find((s) => s.stage === stage)?.ok, stage).toBe(true);
      // The hosts it chose: each on a network of its own (app-server's firewall and sysctl must
      // not be this machine's, and two web-servers side by side must not meet on port 80).
      const started = r.events.find((e) => e.event === 'test-started');
      expect([started?.kind, started?.net]).toEqual([name === 'app-server' ? 'systemd' : 'plain', 'private']);
    });
  }
});
