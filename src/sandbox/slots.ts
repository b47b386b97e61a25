/**
 * Loopback address allocation. Each sandbox host owns one 127.0.0.x (x in
 * 2..254), claimed as a directory under SANDBOX_ROOT/slots/x holding the
 * owner's pid + start time. Claims happen under one flock, and a claim whose
 * owner process is gone is reclaimed, so parallel test workers and a user's
 * long-running sandbox never get the same address.
 */
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { isAlive, readJson, SANDBOX_ROOT, withFileLock, type ProcId } from './util.js';

export const FIRST_SLOT = 2;
export const LAST_SLOT = 254;

export function slotsDir(): string {
  return join(SANDBOX_ROOT, 'slots');
}

export function slotAddress(slot: number): string {
  return `127.0.0.${slot}`;
}

interface SlotOwner extends ProcId {
  sandbox: string;
}

function ownerPath(slot: number): string {
  return join(slotsDir(), String(slot), 'owner.json');
}

export function slotOwner(slot: number): SlotOwner | undefined {
  return readJson<SlotOwner>(ownerPath(slot));
}

function isFree(slot: number): boolean {
  if (!existsSync(join(slotsDir(), String(slot)))) return true;
  const owner = slotOwner(slot);
  return !owner || !isAlive(owner);
}

/** Atomically (write + rename) hand the slot to another process, e.g. the host's unshare. */
export function setSlotOwner(slot: number, owner: ProcId, sandbox: string): void {
  const tmp = `${ownerPath(slot)}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify({ pid: owner.pid, start: owner.start, sandbox }));
  renameSync(tmp, ownerPath(slot));
}

/** Claims `count` free slots for `owner`; throws if the range is exhausted. */
export async function claimSlots(count: number, owner: ProcId, sandbox: string): Promise<number[]> {
  mkdirSync(slotsDir(), { recursive: true });
  return withFileLock(join(SANDBOX_ROOT, 'slots.lock'), async () => {
    const claimed: number[] = [];
    for (let slot = FIRST_SLOT; slot <= LAST_SLOT && claimed.length < count; slot++) {
      if (!isFree(slot)) continue;
      const dir = join(slotsDir(), String(slot));
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir);
      setSlotOwner(slot, owner, sandbox);
      claimed.push(slot);
    }
    if (claimed.length < count) {
      claimed.forEach((s) => rmSync(join(slotsDir(), String(s)), { recursive: true, force: true }));
      throw new Error(
        `no free loopback address for ${count} sandbox host(s): 127.0.0.${FIRST_SLOT}-${LAST_SLOT} are claimed ` +
          `under ${slotsDir()}. Stop sandboxes you no longer need (npm run sandbox -- status / down).`,
      );
    }
    return claimed;
  });
}

/** Releases a slot unless someone else (alive) has claimed it since. */
export function releaseSlot(slot: number, mine: (owner: SlotOwner) => boolean): void {
  const owner = slotOwner(slot);
  if (owner && isAlive(owner) && !mine(owner)) return;
  rmSync(join(slotsDir(), String(slot)), { recursive: true, force: true });
}

/** Slots whose owner process is alive: [slot, owner]. */
export function liveSlots(): Array<[number, SlotOwner]> {
  if (!existsSync(slotsDir())) return [];
  const out: Array<[number, SlotOwner]> = [];
  for (const name of readdirSync(slotsDir())) {
    const slot = Number(name);
    const owner = Number.isInteger(slot) ? slotOwner(slot) : undefined;
    if (owner && isAlive(owner)) out.push([slot, owner]);
  }
  return out.sort((a, b) => a[0] - b[0]);
}

function canBind(address: string, port: number): Promise<boolean> {
  return new Promise((done) => {
    const server = createServer();
    server.once('error', () => done(false));
    server.listen({ host: address, port, exclusive: true }, () => server.close(() => done(true)));
  });
}

/** A free TCP port on `address`: 22000+slot if free, else a random high one. */
export async function pickPort(address: string, slot: number): Promise<number> {
  const candidates = [22000 + slot, ...Array.from({ length: 50 }, () => 30000 + Math.floor(Math.random() * 30000))];
  for (const port of candidates) {
    if (await canBind(address, port)) return port;
  }
  throw new Error(`no free TCP port found on ${address} (tried ${candidates.length}); is something flooding the loopback ports?`);
}

/**
 * The addresses of a host with a network of its own: a /30 per slot, this machine's end (.1) on
 * the link hsv<slot>, the host's (.2) on its eth0. HOSTSMITH_SANDBOX_PRIVATE_NET moves the /16 if
 * 10.231.0.0/16 is in use where the tests run.
 */
export function privateAddresses(slot: number): { host: string; machine: string; link: string } {
  const net = process.env.HOSTSMITH_SANDBOX_PRIVATE_NET ?? '10.231';
  return { host: `${net}.${slot}.2`, machine: `${net}.${slot}.1`, link: `hsv${slot}` };
}
