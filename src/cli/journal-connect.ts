/**
 * Reaching a host again the way a past run reached it, as its journal says (`host-started.target`):
 * shared by `undo` and `prune`. Never asks to trust a new host key: the run already knew it.
 */
import { homedir } from 'node:os';
import { resolve } from 'node:path';
import { ConnectError } from '../errors.js';
import type { Reach } from '../engine/journal.js';
import type { HostState } from '../engine/replay.js';
import type { ShellTransport } from '../transport/base.js';
import { LocalTransport } from '../transport/local.js';
import type { SshTarget } from '../transport/ssh.js';

/** --identity / --known-hosts given on the command line override what the journal says. */
export interface ReachOverrides {
  identity?: string;
  knownHosts?: string;
}

export function sshTargetOf(r: Reach, o: ReachOverrides): SshTarget {
  return {
    name: r.name,
    host: r.host,
    port: r.port,
    user: r.user,
    identities: o.identity ? [resolve(o.identity)] : r.identities,
    knownHostsFile: o.knownHosts ? resolve(o.knownHosts) : (r.knownHostsFile ?? `${homedir()}/.ssh/known_hosts`),
    acceptNewHostKeys: false,
    ...(r.jump ? { jump: sshTargetOf(r.jump, { ...o, identity: undefined }) } : {}),
  };
}

/**
 * Connects to a host the way the run reached it, as its journal says; every transport opened is
 * pushed on `open` so the caller closes it. `command` names who could not connect ("undo").
 */
export function connectAsJournaled(o: ReachOverrides, open: ShellTransport[], command = 'undo') {
  return async (h: HostState): Promise<ShellTransport> => {
    const r = h.target;
    if (!r) throw new ConnectError(h.name, `the journal does not say how the run reached this host (a run from an older hostsmith), so ${command} cannot connect to it`);
    const t = r.kind === 'local' ? new LocalTransport(r.name) : await (await import('../transport/ssh.js')).SshTransport.connect(sshTargetOf(r, o));
    open.push(t);
    return t;
  };
}
