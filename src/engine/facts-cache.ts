/**
 * The facts each host showed last, kept on the controller (in the state dir's `facts/`), so that
 * the next run can send a host its facts script together with the first batch of reads instead of
 * one round trip before it: a no-op then costs the host one exec. The reads are planned from
 * these facts and used only once the facts read in that same exec turn out to be the same
 * (fleet-hosts.ts, run.ts firstContact); anything else and the host is planned again from scratch.
 * A cache that cannot be read or written only costs the round trip it would have saved.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Facts } from '../steps/facts.js';

const fileName = (key: string) => `${createHash('sha256').update(key).digest('hex').slice(0, 32)}.json`;

/** A value read back from the cache is used only if it has exactly the shape facts have. */
function asFacts(v: unknown): Facts | undefined {
  if (!v || typeof v !== 'object') return undefined;
  const f = v as Record<string, unknown>;
  const os = f.os as Record<string, unknown> | undefined;
  const strings = (o: Record<string, unknown> | undefined, keys: string[]) => !!o && keys.every((k) => typeof o[k] === 'string');
  if (!strings(f, ['arch', 'hostname', 'user', 'home', 'pkg', 'init']) || !strings(os, ['id', 'version_id', 'name'])) return undefined;
  return {
    os: { id: os!.id as string, version_id: os!.version_id as string, name: os!.name as string },
    arch: f.arch as string,
    hostname: f.hostname as string,
    user: f.user as string,
    home: f.home as string,
    pkg: f.pkg as string,
    init: f.init as string,
  };
}

export class FactsCache {
  private readonly dir: string;
  constructor(stateDir: string) {
    this.dir = join(stateDir, 'facts');
  }

  /** The host's facts as the last run saw them; undefined when none are kept (or they cannot be read). */
  read(key: string): Facts | undefined {
    try {
      return asFacts(JSON.parse(readFileSync(join(this.dir, fileName(key)), 'utf8')));
    } catch {
      return undefined;
    }
  }

  /** Keeps the facts a run read from the host (written whole, then renamed: a reader never sees half). */
  write(key: string, facts: Facts): void {
    try {
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      const file = join(this.dir, fileName(key));
      const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
      writeFileSync(tmp, `${JSON.stringify(facts)}\n`, { mode: 0o600 });
      renameSync(tmp, file);
    } catch {
      // A state dir that cannot be written costs the next run one round trip, nothing else.
    }
  }
}
