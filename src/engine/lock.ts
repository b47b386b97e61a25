import { hostname } from 'node:os';
import { LockedError } from '../errors.js';
import { quote } from '../transport/shell.js';
import type { Transport } from '../transport/transport.js';

/**
 * A run holds a lock on each host: a directory made with mkdir (atomic), holding who took it.
 * It lives in /run/lock (world-writable, sticky, cleared at boot), so root runs and runs as other
 * users meet the same lock; only where there is no such folder does it fall back to `baseDir`.
 */
export async function acquireLock(t: Transport, baseDir: string, runId: string, sudo: boolean): Promise<() => Promise<void>> {
  const owner = `run=${runId} controller=${hostname()} pid=${process.pid} since=${new Date().toISOString()}`;
  const script = [
    'L=',
    'for d in /run/lock /var/lock; do if [ -d "$d" ] && [ -w "$d" ]; then L="$d/hostsmith.lock"; break; fi; done',
    `if [ -z "$L" ]; then mkdir -p ${quote(baseDir)} && chmod 0700 ${quote(baseDir)} || exit 3; L=${quote(`${baseDir}/lock`)}; fi`,
    `if mkdir "$L" 2>/dev/null; then printf '%s\\n' ${quote(owner)} > "$L/owner"; echo "LOCKED-BY-US $L";`,
    `else echo "HELD $L"; cat "$L/owner" 2>/dev/null; fi`,
  ].join('\n');
  const r = await t.exec(script, { sudo });
  if (r.code !== 0) {
    const hint = sudo ? 'the login user may lack sudo rights on this host' : 'log in as root, or use sudo (--sudo, sudo: true)';
    throw new LockedError(t.name, `cannot create the run lock: ${r.stderr.trim() || `exit ${r.code}`} (${hint})`);
  }
  const [first = '', ...rest] = r.stdout.split('\n');
  const path = first.replace(/^(LOCKED-BY-US|HELD) /, '');
  if (!first.startsWith('LOCKED-BY-US')) {
    const holder = rest.join(' ').trim() || 'an unknown run';
    throw new LockedError(
      t.name,
      `host is locked by another hostsmith run (${holder}). Wait for it to finish; if no run is active ` +
        `(its controller crashed), check \`hostsmith show <run>\` for what it left, then remove ${path} on the host.`,
    );
  }
  return async () => {
    await t.exec(`rm -rf ${quote(path)}`, { sudo });
  };
}
