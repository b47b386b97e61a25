/**
 * A custom step type on a real host: the example `alternatives` type (recipes/types/alternatives.ts),
 * loaded through a recipe's `types:` and held to the same battery as the built-ins — applied,
 * unchanged on a rerun, rolled back to zero residue when a later step fails, undone, recovered after
 * SIGKILL — then `undo` refused once the module was edited since the run.
 *
 * The module is the shipped example with its `from 'hostsmith'` pointed at this checkout's build
 * (the fixture folder has no node_modules to resolve the package from). A package.json beside it
 * says ESM, as a project's own would. The host gets an alternatives name of its own in setup (before
 * the snapshot): hs-pager, /usr/bin/cat (priority 20, so auto picks it) or /usr/bin/tac (10).
 * update-alternatives logs to /var/log/alternatives.log, which the residue check leaves out anyway.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Sandbox, SandboxHost } from '../hosts/hosts.js';
import { sshOk } from '../hosts/ssh.js';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { fixture, hostsmith, sandboxArgs, stepEvents } from './cli.js';
import { stepBattery } from './step-battery.js';

const ROOT = new URL('../../', import.meta.url);
// What `import 'hostsmith'` resolves to (package.json main/exports): the bundle the CLI runs from.
const DIST = pathToFileURL(join(ROOT.pathname, 'dist/bundle/index.js')).href;
const MODULE = readFileSync(new URL('recipes/types/alternatives.ts', ROOT), 'utf8').replace("from 'hostsmith'", `from ${JSON.stringify(DIST)}`);

const FILES = { 'types/alternatives.ts': MODULE, 'types/package.json': '{ "type": "module" }\n' };
const HEAD = 'types:\n  - ./types/alternatives.ts\n';
const STEP = '  - name: tac pages\n    alternatives: { name: hs-pager, path: /usr/bin/tac }\n';

async function installPagerName(sb: Sandbox, h: SandboxHost): Promise<void> {
  await sshOk(sb, h, 'update-alternatives --install /usr/local/bin/hs-pager hs-pager /usr/bin/cat 20 && update-alternatives --install /usr/local/bin/hs-pager hs-pager /usr/bin/tac 10');
}

const pagerIs = (sb: Sandbox, h: SandboxHost) => sshOk(sb, h, "LC_ALL=C update-alternatives --query hs-pager | grep -E '^(Status|Value):'; readlink /etc/alternatives/hs-pager");

stepBattery('alternatives (custom type)', {
  head: HEAD,
  steps: STEP,
  files: FILES,
  setup: installPagerName,
  // What rollback puts back (auto mode, the link to cat) is all in files: the residue check sees it.
  async verify(sb, h) {
    expect(await pagerIs(sb, h)).toBe('Status: manual\nValue: /usr/bin/tac\n/usr/bin/tac\n');
  },
});

describeHosts('a custom type: the plan, the journal, and undo after its module changed', () => {
  const sandbox = useSandbox(1);
  const dirs: string[] = [];
  let dir: string;
  const state = () => {
    const d = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
    dirs.push(d);
    return d;
  };
  beforeAll(async () => {
    dir = fixture({ ...FILES, 'r.yml': `name: custom-type\n${HEAD}steps:\n${STEP}` });
    dirs.push(dir);
    await installPagerName(sandbox(), sandbox().hosts[0]!);
  });
  afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

  it('plans with a diff, journals the module, and undo refuses (exit 2) once the module was edited, until it is put back', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const recipe = join(dir, 'r.yml');

    const plan = await hostsmith(['plan', recipe, '--hosts', h.name, ...sandboxArgs(sb, state())]);
    expect(plan.code, plan.stdout + plan.stderr).toBe(0);
    expect(plan.stdout).toContain('hs-pager: /usr/bin/cat (auto) → /usr/bin/tac (manual)');
    expect(plan.stdout).toContain('+/usr/bin/tac (manual)');

    const s = state();
    const r = await hostsmith(['apply', recipe, '--yes', '--hosts', h.name, ...sandboxArgs(sb, s), '--json']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(stepEvents(r).map((e) => [e.step, e.status])).toEqual([['tac pages', 'changed']]);
    const runId = r.events.find((e) => e.event === 'run-started')!.runId as string;
    const started = JSON.parse(readFileSync(join(s, 'runs', `${runId}.ndjson`), 'utf8').split('\n')[0]!);
    const file = join(dir, 'types/alternatives.ts');
    expect(started.types).toEqual([{ path: file, sha256: expect.stringMatching(/^[0-9a-f]{64}$/), types: ['alternatives'] }]);

    writeFileSync(file, `${MODULE}// edited after the run\n`);
    const refused = await hostsmith(['undo', runId, '--yes', '--state-dir', s]);
    expect(refused.code, refused.stdout + refused.stderr).toBe(2);
    expect(refused.stderr).toContain(`the custom step types module ${file} has changed since run ${runId}`);
    expect(refused.stderr).toContain('Restore the module as it was at the run');
    expect(await pagerIs(sb, h)).toBe('Status: manual\nValue: /usr/bin/tac\n/usr/bin/tac\n');

    writeFileSync(file, MODULE);
    const undo = await hostsmith(['undo', runId, '--yes', '--state-dir', s]);
    expect(undo.code, undo.stdout + undo.stderr).toBe(0);
    expect(undo.stdout).toContain('put hs-pager back in auto mode');
    expect(await pagerIs(sb, h)).toBe('Status: auto\nValue: /usr/bin/cat\n/usr/bin/cat\n');
  });
});
