/**
 * motd.yml as a typed TypeScript recipe: the same steps, so the same plan (the tests hold the
 * two to it). `hostsmith plan recipes/motd.ts --hosts local` loads it directly; an editor
 * completes and checks every key and param from the schemas hostsmith validates with.
 */
import { defineRecipe } from 'hostsmith';

export default defineRecipe({
  name: 'motd',
  description: 'A message of the day and a small app config, from templates; safe to preview anywhere',
  vars: {
    contact: { default: 'ops@example.com', pattern: '^[^@]+@[^@]+$', description: 'Who to call about this host' },
    greeting: { default: 'Welcome', prompt: true, description: 'First line of the message of the day' },
    app_port: { default: 8080, type: 'number', description: 'Port the demo app listens on' },
    api_token: { default: 'change-me', secret: true, description: 'Token the demo app uses' },
  },
  steps: [
    { name: 'App folder', file: { path: '/opt/hostsmith-demo', state: 'directory', mode: '0755' } },
    { name: 'Message of the day', template: { src: 'motd.hbs', dest: '/etc/motd', mode: '0644' } },
    { name: 'App config', template: { src: 'demo-app.conf.hbs', dest: '/opt/hostsmith-demo/app.conf', mode: '0600' }, notify: ['Record config change'] },
    {
      name: 'Install stamp',
      command: {
        run: 'date -u +%FT%TZ > /opt/hostsmith-demo/installed-at',
        creates: '/opt/hostsmith-demo/installed-at',
        rollback: 'rm -f /opt/hostsmith-demo/installed-at',
      },
    },
  ],
  handlers: [
    // Run in the app's folder: after an undo that removed the folder, it is not needed again.
    { name: 'Record config change', command: { cwd: '/opt/hostsmith-demo', run: 'echo "config changed by run" >> changes.log', rollback: 'rm -f changes.log' } },
  ],
});
