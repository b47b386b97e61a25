/**
 * The bench's built-in recipes, and the shape they share. Each recipe is a list of steps, each
 * step a pair: the step as YAML, and the same change as plain shell with no checks. The recipe
 * file and the first-run floor (all the shell lines as one script) come from that one list, so
 * they cannot drift apart; the bench also checks (once per host count) that `hostsmith plan`
 * finds nothing to change on hosts the floor script set up, i.e. that the script really makes
 * the recipe's changes.
 *
 * This file holds the shared helpers and `bench`, the default 30-step recipe of every step type;
 * webapp.ts holds the heavier recipe a web app's host gets.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface Step {
  /** The step as YAML (one list item, indented by two). */
  yaml: string;
  /** The same change as plain shell, no checks ('' when a later step's line makes it, as for a crontab written once). */
  sh: string;
}

/** A recipe the bench carries, with its first-run floor. */
export interface BuiltInRecipe {
  /** What `npm run bench -- <name>` calls it. */
  name: string;
  description: string;
  /** The step types it uses, for the report's header. */
  types: readonly string[];
  /** How many steps (each one changes on a fresh host). */
  steps: number;
  /** Writes `<name>.yml` and its templates into `dir`; returns the recipe path and step count. */
  writeRecipe(dir: string): { path: string; steps: number };
  /** The first-run floor: the recipe's changes as one script for `sh -s`, no checks (set -e only). */
  floorScript(): string;
}

/** Shell single-quoting. */
export const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/** Where a template says `{{facts.hostname}}`, the floor's text has this; `writeSh` turns it into `$(hostname)`. */
export const HOSTNAME = '\u0000hostname\u0000';

/**
 * Shell that writes `content` to `path` as it is, except that HOSTNAME becomes the host's name
 * (as `facts.hostname` is on the host): an unquoted here-document, with `\`, `$` and backquotes
 * escaped so nginx's `$host` and the like stay literal.
 */
export function writeSh(path: string, content: string): string {
  if (!content.endsWith('\n')) throw new Error(`writeSh: ${path}: a here-document ends with a newline, this content does not`);
  if (!content.includes(HOSTNAME)) return `cat > ${path} <<'HOSTSMITH_EOF'\n${content}HOSTSMITH_EOF`;
  const body = content.replace(/[\\$`]/g, '\\$&').replaceAll(HOSTNAME, '$(hostname)');
  return `cat > ${path} <<HOSTSMITH_EOF\n${body}HOSTSMITH_EOF`;
}

/** chown and chmod as a file step with these fields leaves the path ('' for fields not given). */
export function metaSh(path: string, o: { mode?: string; owner?: string; group?: string }): string {
  const own = o.owner !== undefined || o.group !== undefined ? `chown ${o.owner ?? ''}${o.group !== undefined ? `:${o.group}` : ''} ${path}` : '';
  return [own, o.mode ? `chmod ${o.mode} ${path}` : ''].filter(Boolean).join(' && ');
}

/** One user's crontab as hostsmith writes it: a `# hostsmith: <name>` marker line above each entry. */
export function crontabSh(user: string, entries: Array<{ name: string; schedule: string; command: string }>): string {
  const text = entries.map((e) => `# hostsmith: ${e.name}\n${e.schedule} ${e.command}\n`).join('');
  return `printf '%s' ${q(text)} | crontab -u ${user} -`;
}

/** A recipe from its steps: the YAML file (with optional vars and template files) and the floor script, from one list. */
export function defineRecipe(o: { name: string; description: string; types: readonly string[]; vars?: string; templates?: Record<string, string>; steps: () => Step[] }): BuiltInRecipe {
  const count = o.steps().length;
  return {
    name: o.name,
    description: o.description,
    types: o.types,
    steps: count,
    writeRecipe(dir) {
      const list = o.steps();
      mkdirSync(join(dir, 'templates'), { recursive: true });
      for (const [file, text] of Object.entries(o.templates ?? {})) writeFileSync(join(dir, 'templates', file), text);
      const path = join(dir, `${o.name}.yml`);
      writeFileSync(path, `name: ${o.name}\ndescription: ${o.description}\n${o.vars ? `vars:\n${o.vars}\n` : ''}steps:\n${list.map((s) => s.yaml).join('\n')}\n`);
      return { path, steps: list.length };
    },
    floorScript: () =>
      `set -e\n${o
        .steps()
        .map((s) => s.sh)
        .filter(Boolean)
        .join('\n')}\n`,
  };
}

// ---------------------------------------------------------------- bench: 30 steps of every type

/** A small real package from the Debian mirror (one dependency, libc6, already there). */
export const BENCH_PACKAGE = 'tree';

const TEMPLATE = '# {{title}} on {{facts.hostname}}\nport = {{port}}\n{{#each items}}item = {{this}}\n{{/each}}';

function benchSteps(): Step[] {
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
  const crons = [
    { name: 'bench-a', schedule: '*/5 * * * *', command: '/usr/bin/true' },
    { name: 'bench-b', schedule: '17 3 * * *', command: '/usr/bin/test -d /srv/bench' },
  ];
  add(`  - name: Cron a\n    cron: { name: ${crons[0]!.name}, schedule: "${crons[0]!.schedule}", command: ${crons[0]!.command} }`, '');
  add(`  - name: Cron b\n    cron: { name: ${crons[1]!.name}, schedule: "${crons[1]!.schedule}", command: "${crons[1]!.command}" }`, crontabSh('root', crons));
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

export const bench: BuiltInRecipe = defineRecipe({
  name: 'bench',
  description: '30 steps of every type (npm run bench)',
  types: STEP_TYPES,
  templates: { 'bench.conf.hbs': TEMPLATE },
  steps: benchSteps,
});

// The names test/bench/profile.ts uses: the default recipe.
export const writeRecipe = (dir: string): { path: string; steps: number } => bench.writeRecipe(dir);
export const floorScript = (): string => bench.floorScript();
export const RECIPE_STEPS = bench.steps;
