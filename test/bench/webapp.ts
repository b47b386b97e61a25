/**
 * `npm run bench -- webapp`: 30 steps of the kind a web app's host gets — nginx-light, jq and tree
 * from the Debian mirror, a system group and user for the app, its folders and files, nginx sites
 * and app config from templates, cron jobs, edits to nginx.conf and limits.conf, and guarded
 * commands (`creates:`, `removes:`, `unless:`). As in recipe.ts, each step comes with the same
 * change as plain shell with no checks (the first-run floor), from one list.
 *
 * nginx: the package starts nginx as it installs (the sandbox hosts' policy-rc.d lets services
 * start), and Debian's default site listens on port 80 on every address. The sandbox hosts share
 * this machine's network, each on its own 127.0.0.x, so that would take port 80 from every other
 * host. The recipe does what one does on a host with several addresses: it writes the catch-all
 * site first, listening only on the host's own address (its name, which /etc/hosts maps to it),
 * and nginx-common then keeps that file instead of linking its own default site. nginx's own
 * postinst starts it only if nothing listens on port 80 yet, so with many hosts one of them runs
 * nginx (on its own address) and the others install it without starting it.
 */
import { crontabSh, defineRecipe, HOSTNAME, metaSh, q, type Step, writeSh } from './recipe.js';

/** The recipe's vars with their defaults; the floor uses the defaults (and the host's name for facts). */
const VARS = {
  server_name: 'app.example.com',
  app_port: 8000,
  workers: 4,
  log_keep_days: 14,
  app_version: '1.4.2',
} as const;

const VARS_YAML = [
  `  server_name: { default: ${VARS.server_name}, description: Public host name of the app }`,
  `  app_port: { default: ${VARS.app_port}, type: number, description: Port the app listens on (127.0.0.1) }`,
  `  workers: { default: ${VARS.workers}, type: number }`,
  `  log_keep_days: { default: ${VARS.log_keep_days}, type: number }`,
  `  app_version: { default: "${VARS.app_version}" }`,
  // A default that is a template: the host's own address, by the name /etc/hosts gives it.
  `  listen: { default: "{{facts.hostname}}:80", description: "What nginx listens on: this host's address, not every address" }`,
].join('\n');

/** A template's text as a function of how an expression is written: `{{x}}` for the .hbs file, the value for the floor. */
type Text = (v: (expr: string) => string) => string;

const hbs = (expr: string): string => `{{${expr}}}`;
const floorValue = (expr: string): string => {
  if (expr === 'facts.hostname') return HOSTNAME;
  if (expr === 'listen') return `${HOSTNAME}:80`;
  if (expr in VARS) return String(VARS[expr as keyof typeof VARS]);
  throw new Error(`webapp floor: no value for {{${expr}}}`);
};

interface Template {
  name: string;
  src: string;
  dest: string;
  mode: string;
  owner?: string;
  group?: string;
  text: Text;
}

const TEMPLATES: Template[] = [
  {
    name: 'Catch-all site',
    src: 'webapp-default-site.conf.hbs',
    dest: '/etc/nginx/sites-enabled/default',
    mode: '0644',
    text: (v) =>
      `# nginx's catch-all site on ${v('facts.hostname')}: on this host's own address only, so other\n` +
      `# services on the machine keep port 80 on their addresses.\n` +
      `server {\n\tlisten ${v('listen')} default_server;\n\tserver_name _;\n\treturn 444;\n}\n`,
  },
  {
    name: 'App site',
    src: 'webapp-site.conf.hbs',
    dest: '/etc/nginx/sites-enabled/webapp.conf',
    mode: '0644',
    text: (v) =>
      `# ${v('server_name')} on ${v('facts.hostname')}\n` +
      `upstream webapp {\n\tserver 127.0.0.1:${v('app_port')};\n}\n\n` +
      `server {\n\tlisten ${v('listen')};\n\tserver_name ${v('server_name')};\n\tinclude snippets/webapp-headers.conf;\n\n` +
      `\tlocation /static/ {\n\t\talias /srv/webapp/shared/static/;\n\t}\n\n` +
      `\tlocation / {\n\t\tproxy_pass http://webapp;\n\t\tproxy_set_header Host $host;\n\t\tproxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\t}\n}\n`,
  },
  {
    name: 'App config',
    src: 'webapp-config.yml.hbs',
    dest: '/srv/webapp/shared/config.yml',
    mode: '0640',
    owner: 'webapp',
    group: 'webapp',
    text: (v) =>
      `# ${v('server_name')} app settings, written for ${v('facts.hostname')}\n` +
      `host: ${v('facts.hostname')}\nport: ${v('app_port')}\nworkers: ${v('workers')}\nversion: "${v('app_version')}"\n` +
      `log_dir: /var/log/webapp\nstatic_dir: /srv/webapp/shared/static\n`,
  },
  {
    name: 'App logrotate',
    src: 'webapp-logrotate.hbs',
    dest: '/etc/logrotate.d/webapp',
    mode: '0644',
    text: (v) => `# ${v('server_name')} on ${v('facts.hostname')}\n/var/log/webapp/*.log {\n\tdaily\n\trotate ${v('log_keep_days')}\n\tcompress\n\tmissingok\n\tnotifempty\n\tsu webapp adm\n}\n`,
  },
  {
    name: 'App environment',
    src: 'webapp-default.hbs',
    dest: '/etc/default/webapp',
    mode: '0644',
    text: (v) => `# Environment of the ${v('server_name')} app on ${v('facts.hostname')}\nAPP_HOST=${v('facts.hostname')}\nAPP_PORT=${v('app_port')}\nAPP_WORKERS=${v('workers')}\n`,
  },
];

const yamlMeta = (o: { mode?: string; owner?: string; group?: string }): string =>
  [o.mode ? `mode: "${o.mode}"` : '', o.owner ? `owner: ${o.owner}` : '', o.group ? `group: ${o.group}` : ''].filter(Boolean).join(', ');

const apt = (pkgs: string[]): string => `DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o Dpkg::Use-Pty=0 ${pkgs.join(' ')} >/dev/null`;

function steps(): Step[] {
  const out: Step[] = [];
  const add = (yaml: string, sh: string): void => void out.push({ yaml, sh });
  const template = (t: Template): void =>
    add(
      `  - name: ${t.name}\n    template: { src: ${t.src}, dest: ${t.dest}, ${yamlMeta(t)} }`,
      // A file step makes the folders a path needs; so does the floor.
      `mkdir -p ${t.dest.slice(0, t.dest.lastIndexOf('/'))} && ${writeSh(t.dest, t.text(floorValue))}\n${metaSh(t.dest, t)}`,
    );

  // The app's account: a system group, and a system user in it (and in www-data, which reads its static files).
  add(`  - name: App group\n    group: { name: webapp, system: true }`, `groupadd -r -- webapp`);
  add(
    `  - name: App user\n    user: { name: webapp, system: true, comment: Web app, home: /var/lib/webapp, shell: /usr/sbin/nologin, groups: [www-data] }`,
    `useradd -r -c 'Web app' -s /usr/sbin/nologin -d /var/lib/webapp -m -g webapp -G www-data -- webapp`,
  );
  // Before nginx is installed: see the header.
  template(TEMPLATES[0]!);
  add(`  - name: Web server\n    package: { install: [nginx-light] }`, apt(['nginx-light']));
  add(`  - name: Tools\n    package: { install: [jq, tree] }`, apt(['jq', 'tree']));

  // 4 folders and 3 files.
  const dirs = [
    { path: '/srv/webapp', mode: '0755', owner: 'webapp', group: 'webapp' },
    { path: '/srv/webapp/shared', mode: '0750', owner: 'webapp', group: 'www-data' },
    { path: '/srv/webapp/shared/static', mode: '0755', owner: 'webapp', group: 'webapp' },
    { path: '/var/log/webapp', mode: '0750', owner: 'webapp', group: 'adm' },
  ];
  for (const d of dirs) add(`  - name: Folder ${d.path}\n    file: { path: ${d.path}, state: directory, ${yamlMeta(d)} }`, `mkdir -p ${d.path} && ${metaSh(d.path, d)}`);
  const files = [
    { path: '/srv/webapp/shared/static/robots.txt', content: 'User-agent: *\nDisallow: /admin/\n', mode: '0644', owner: 'webapp', group: 'webapp' },
    {
      path: '/etc/nginx/snippets/webapp-headers.conf',
      content: 'add_header X-Frame-Options SAMEORIGIN always;\nadd_header X-Content-Type-Options nosniff always;\nadd_header Referrer-Policy strict-origin-when-cross-origin always;\n',
      mode: '0644',
    },
    {
      path: '/usr/local/bin/webapp-healthcheck',
      content: '#!/bin/sh\n# Exits non-zero when the app does not answer on its port.\n. /etc/default/webapp\nexec curl -fsS -o /dev/null --max-time 5 "http://127.0.0.1:${APP_PORT}/healthz"\n',
      mode: '0755',
    },
  ];
  for (const f of files) {
    add(`  - name: File ${f.path}\n    file: { path: ${f.path}, content: ${JSON.stringify(f.content)}, ${yamlMeta(f)} }`, `printf '%s' ${q(f.content)} > ${f.path} && ${metaSh(f.path, f)}`);
  }

  for (const t of TEMPLATES.slice(1)) template(t);

  // 5 cron entries: three in the app user's crontab, two in root's; each crontab is written once by the floor.
  const crons = {
    webapp: [
      { name: 'webapp-health', schedule: '*/5 * * * *', command: '/usr/local/bin/webapp-healthcheck' },
      { name: 'webapp-tmp-clean', schedule: '30 2 * * *', command: 'find /srv/webapp/shared/tmp -type f -mtime +2 -delete' },
      { name: 'webapp-old-logs', schedule: '@daily', command: "find /var/log/webapp -name '*.gz' -mtime +30 -delete" },
    ],
    root: [
      { name: 'nginx-config-check', schedule: '15 4 * * *', command: '/usr/sbin/nginx -t -q' },
      { name: 'webapp-config-backup', schedule: '0 3 * * *', command: 'tar -czf /var/backups/webapp-config.tgz -C /srv/webapp shared/config.yml' },
    ],
  };
  for (const [user, entries] of Object.entries(crons)) {
    entries.forEach((e, i) =>
      add(
        `  - name: Cron ${e.name}\n    cron: { name: ${e.name}, user: ${user}, schedule: ${JSON.stringify(e.schedule)}, command: ${JSON.stringify(e.command)} }`,
        i === entries.length - 1 ? crontabSh(user, entries) : '',
      ),
    );
  }

  // 4 lines: two settings in nginx.conf (replacing Debian's commented-out lines), a new env file, a limit.
  add(
    `  - name: Hide nginx version\n    line: { path: /etc/nginx/nginx.conf, line: "\\tserver_tokens off;", match: "^\\\\s*#?\\\\s*server_tokens\\\\s" }`,
    `sed -i 's/^[[:space:]]*#\\{0,1\\}[[:space:]]*server_tokens[[:space:]].*/\\tserver_tokens off;/' /etc/nginx/nginx.conf`,
  );
  add(
    `  - name: Compress app responses\n    line: { path: /etc/nginx/nginx.conf, line: "\\tgzip_types text/plain text/css application/json application/javascript;", match: "^\\\\s*#?\\\\s*gzip_types\\\\s" }`,
    `sed -i 's/^[[:space:]]*#\\{0,1\\}[[:space:]]*gzip_types[[:space:]].*/\\tgzip_types text\\/plain text\\/css application\\/json application\\/javascript;/' /etc/nginx/nginx.conf`,
  );
  add(
    `  - name: App port\n    line: { path: /srv/webapp/shared/app.env, line: "PORT={{app_port}}", create: true, mode: "0640", owner: webapp, group: webapp }`,
    `echo 'PORT=${VARS.app_port}' > /srv/webapp/shared/app.env && ${metaSh('/srv/webapp/shared/app.env', { mode: '0640', owner: 'webapp', group: 'webapp' })}`,
  );
  add(`  - name: App open files\n    line: { path: /etc/security/limits.conf, line: "webapp - nofile 65536" }`, `echo 'webapp - nofile 65536' >> /etc/security/limits.conf`);

  // 5 guarded commands: three by a path (creates/removes, read with the other checks), two by `unless` (a command of their own).
  // No `umask` here: in the floor's one script it would outlive this line.
  const secret = 'head -c 32 /dev/urandom | base64 > /srv/webapp/shared/secret.key && chown webapp:webapp /srv/webapp/shared/secret.key && chmod 0600 /srv/webapp/shared/secret.key';
  add(`  - name: Secret key\n    command: { run: ${JSON.stringify(secret)}, creates: /srv/webapp/shared/secret.key }`, secret);
  const data = 'install -d -o webapp -g webapp -m 0750 /srv/webapp/shared/data && touch /srv/webapp/shared/data/.initialized';
  add(`  - name: Data folder\n    command: { run: ${JSON.stringify(data)}, creates: /srv/webapp/shared/data/.initialized }`, data);
  add(`  - name: No placeholder page\n    command: { run: rm /var/www/html/index.nginx-debian.html, removes: /var/www/html/index.nginx-debian.html }`, `rm /var/www/html/index.nginx-debian.html`);
  add(
    `  - name: Static files link\n    command: { run: ln -s /srv/webapp/shared/static /var/www/html/static }\n    unless: test -L /var/www/html/static`,
    `ln -s /srv/webapp/shared/static /var/www/html/static`,
  );
  add(
    `  - name: Version stamp\n    command: { run: "echo {{app_version}} > /srv/webapp/shared/VERSION" }\n    unless: "grep -qx '{{app_version}}' /srv/webapp/shared/VERSION"`,
    `echo ${VARS.app_version} > /srv/webapp/shared/VERSION`,
  );
  return out;
}

export const webapp = defineRecipe({
  name: 'webapp',
  description: "30 steps a web app's host gets (npm run bench -- webapp)",
  types: ['package', 'group', 'user', 'file', 'template', 'cron', 'line', 'command'],
  vars: VARS_YAML,
  templates: Object.fromEntries(TEMPLATES.map((t) => [t.src, t.text(hbs)])),
  steps,
});
