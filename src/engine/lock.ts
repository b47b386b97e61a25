import { hostname } from 'node:os';
import { LockedError } from '../errors.js';
import { quote } from '../transport/shell.js';
import type { Transport } from '../transport/transport.js';

/**
 * A run holds a lock on each host: a directory made with mkdir, which is atomic, holding
 * who took it. It lives on the host so two controllers cannot configure it at once.
 */
export async function acquireLock(t: Transport, baseDir: string, runId: string, sudo: boolean): Promise<() => Promise<void>> {
  const dir = `${baseDir}/lock`;
  const owner = `run=${runId} controller=${hostname()} pid=${process.pid} since=${new Date().toISOString()}`;
  const script = [
    `mkdir -p ${quote(baseDir)} && chmod 0700 ${quote(baseDir)} || exit 3`,
    `if mkdir ${quote(dir)} 2>/dev/null; then printf '%s\\n' ${quote(owner)} > ${quote(`${dir}/owner`)}; echo LOCKED-BY-US;`,
    `else echo HELD; cat ${quote(`${dir}/owner`)} 2>/dev/null; fi`,
  ].join('\n');
  const r = await t.exec(script, { sudo });
  if (r.code !== 0) {
    const hint = sudo ? 'the login user may lack sudo rights on this host' : 'log in as root, or use sudo (--sudo, sudo: true)';
    throw new LockedError(t.name, `cannot create the lock in ${baseDir}: ${r.stderr.trim() || `exit ${r.code}`} (${hint})`);
  }
  if (!r.stdout.startsWith('LOCKED-BY-US')) {
    const holder = r.stdout.replace(/^HELD\n?/, '').trim() || 'an unknown run';
    throw new LockedError(
      t.name,
      `host is locked by another hostsmith run (${holder}). Wait for it to finish; if no run is active ` +
        `(the controller crashed), run \`hostsmith recover\` or remove ${dir} on the host.`,
    );
  }
  return async () => {
    await t.exec(`rm -rf ${quote(dir)}`, { sudo });
  };
}
