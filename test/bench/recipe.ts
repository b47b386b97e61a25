/**
 * The benchmark's 30-step recipe (every step type), and the first-run floor: the same changes
 * as one plain shell script, with no checks. Both come from one list, so they cannot drift apart;
 * the bench also checks (once per host count) that `hostsmith plan` finds nothing to change on
 * hosts the floor script set up, i.e. that the script really makes the recipe's changes.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** A small real package from the Debian mirror (one dependency, libc6, already there). */
export const BENCH_PACKAGE = 'tree';

interface Step {
  /** The step as YAML (one list item, indented by two). */
  yaml: string;
  /** The same change as plain shell, no checks. */
  sh: string;
}

const TEMPLATE = '# {{title}} on {{facts.hostname}}\nport = {{port}}\n{{#each items}}item = {{this}}\n{{/each}}';

/** Shell single-quoting. */
const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

function steps(): Step[] {
  const out: Step[] = [];
  const add = (yaml: string, sh: string): void => void out.push({ yaml, sh });

  add(`  - name: Group\n    group: { name: benchgrp, gid: 1500 }`, `groupadd -g 1500 -- benchgrp`);
  add(`  - name: User\n    user: { name: benchusr, shell: /bin/bash, groups: [benchgrp] }`, `useradd -m -s /bin/bash -G benchgrp -- benchusr`);
  add(`  - name: Package\n    package: { install: [${BENCH_PACKAGE}] }`, `DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o Dpkg::Use-Pty=0 ${BENCH_PACKAGE} >/dev/null`);
  add(`  - name: Folder\n    file: { path: /srv/bench, state: directory, mode: "0755" }`, `mkdir -p /srv/bench && chmod 0755 /srv/bench`);
  // 9 files
  for (let i = 1; i <= 9; i++) {
    const content = `file ${i}\nline two of file ${i}\n`;
    add(
      `  - name: File ${i}\n    file: { path: /srv/bench/f${i}.txt, content: ${JSON.stringify(content)}, mode: "0640" }`,
      `printf '%s' ${q(content)} > /srv/bench/f${i}.txt && chmod 0640 /srv/bench/f${i}.txt`,
    );
  }
  // 7 templates: the floor renders them on the host with $(hostname), as facts.hostname is there.
  for (let i = 1; i <= 7; i++) {
    const items = ['a', 'b', `c${i}`];
    add(
      `  - name: Template ${i}\n    template: { src: bench.conf.hbs, dest: /srv/bench/t${i}.conf, mode: "0644", vars: { title: "conf ${i}", port: ${8000 + i}, items: [${items.join(', ')}] } }`,
      `cat > /srv/bench/t${i}.conf <<EOF\n# conf ${i} on $(hostname)\nport = ${8000 + i}\n${items.map((x) => `item = ${x}`).join('\n')}\nEOF\nchmod 0644 /srv/bench/t${i}.conf`,
    );
  }
  // 5 lines: three in a file the first creates, one appended to an existing file, one replaced.
  for (let i = 1; i <= 3; i++) {
    add(
      `  - name: Line ${i}\n    line: { path: /srv/bench/app.env, line: "KEY${i}=value${i}", create: true, mode: "0644" }`,
      `${i === 1 ? 'touch /srv/bench/app.env && chmod 0644 /srv/bench/app.env && ' : ''}echo 'KEY${i}=value${i}' >> /srv/bench/app.env`,
    );
  }
  add(`  - name: Line env\n    line: { path: /etc/environment, line: "BENCH_ENV=1" }`, `echo 'BENCH_ENV=1' >> /etc/environment`);
  add(`  - name: Line login.defs\n    line: { path: /etc/login.defs, line: "PASS_MAX_DAYS 365", match: "^PASS_MAX_DAYS" }`, `sed -i 's/^PASS_MAX_DAYS.*/PASS_MAX_DAYS 365/' /etc/login.defs`);
  // 2 cron entries in root's crontab, as hostsmith writes them (a marker line above each).
  add(`  - name: Cron a\n    cron: { name: bench-a, schedule: "*/5 * * * *", command: /usr/bin/true }`, '');
  add(`  - name: Cron b\n    cron: { name: bench-b, schedule: "17 3 * * *", command: "/usr/bin/test -d /srv/bench" }`, '');
  out[out.length - 1]!.sh = `printf '%s' ${q('# hostsmith: bench-a\n*/5 * * * * /usr/bin/true\n# hostsmith: bench-b\n17 3 * * * /usr/bin/test -d /srv/bench\n')} | crontab -u root -`;
  // 2 commands, idempotent through creates:
  add(`  - name: Command 1\n    command: { run: "echo done > /srv/bench/cmd1.done", creates: /srv/bench/cmd1.done }`, `echo done > /srv/bench/cmd1.done`);
  add(
    `  - name: Command 2\n    command: { run: "mkdir -p /srv/bench/data && touch /srv/bench/data/.init", creates: /srv/bench/data/.init }`,
    `mkdir -p /srv/bench/data && touch /srv/bench/data/.init`,
  );
  // cron is installed and enabled at boot on the hosts, and stopped (no systemd: sysvinit).
  add(`  - name: Service\n    service: { name: cron, state: started, enabled: true }`, `service cron start >/dev/null`);
  return out;
}

export const STEP_TYPES = ['package', 'file', 'template', 'line', 'cron', 'command', 'service', 'user', 'group'] as const;

/** Writes bench.yml and templates/bench.conf.hbs into `dir`; returns the recipe path and step count. */
export function writeRecipe(dir: string): { path: string; steps: number } {
  const list = steps();
  mkdirSync(join(dir, 'templates'), { recursive: true });
  writeFileSync(join(dir, 'templates/bench.conf.hbs'), TEMPLATE);
  const path = join(dir, 'bench.yml');
  writeFileSync(path, `name: bench\ndescription: 30 steps of every type (npm run bench)\nsteps:\n${list.map((s) => s.yaml).join('\n')}\n`);
  return { path, steps: list.length };
}

/** The first-run floor: the recipe's changes as one script for `sh -s`, no checks (set -e only). */
export function floorScript(): string {
  return `set -e\n${steps()
    .map((s) => s.sh)
    .filter(Boolean)
    .join('\n')}\n`;
}

export const RECIPE_STEPS = steps().length;
