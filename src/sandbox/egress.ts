/**
 * How a host on a network of its own reaches Debian's mirror and the web: an HTTP proxy on this
 * machine's end of its veth pair, which the host's apt and logins (proxy variables) are told to
 * use. The host still has no route out: no NAT, no forwarding, nothing changed in this machine's
 * network but the pair itself. Only what goes through the proxy leaves, and only to ports 80
 * (plain requests) and 443 (CONNECT), so a firewall recipe is proved on the host without its
 * packages being out of reach.
 *
 * The proxy is a child process (a short script given to `node -e`), so it runs the same from the
 * built CLI and from the tests' TypeScript, and outlives the process that started a detached
 * sandbox. Stopping the host stops it.
 */
import { spawn } from 'node:child_process';

export const PROXY_PORT = 3142; // apt-cacher-ng's, the port apt users know for a proxy

/** The proxy itself: plain JavaScript, since `node -e` takes no TypeScript. */
const PROXY = String.raw`
const http = require('node:http');
const net = require('node:net');
const [address, port] = process.argv.slice(1);
const server = http.createServer((req, res) => {
  let url;
  try { url = new URL(req.url); } catch { return void res.writeHead(400).end('absolute URLs only\n'); }
  if (url.protocol !== 'http:' || (url.port && url.port !== '80')) return void res.writeHead(403).end('port 80 only\n');
  const headers = { ...req.headers };
  delete headers['proxy-connection'];
  delete headers['proxy-authorization'];
  const up = http.request({ host: url.hostname, port: 80, method: req.method, path: url.pathname + url.search, headers }, (r) => {
    res.writeHead(r.statusCode, r.headers);
    r.pipe(res);
  });
  up.setTimeout(60000, () => up.destroy(new Error('timed out')));
  up.on('error', (e) => { if (!res.headersSent) res.writeHead(502).end(e.message + '\n'); else res.destroy(); });
  req.pipe(up);
});
server.on('connect', (req, sock, head) => {
  const m = /^([^:]+):443$/.exec(req.url || '');
  if (!m) return void sock.end('HTTP/1.1 403 Forbidden\r\n\r\n');
  const up = net.connect(443, m[1], () => {
    sock.write('HTTP/1.1 200 Connection established\r\n\r\n');
    up.write(head);
    up.pipe(sock);
    sock.pipe(up);
  });
  up.on('error', () => sock.destroy());
  sock.on('error', () => up.destroy());
});
server.on('clientError', (e, sock) => sock.destroy());
server.listen(Number(port), address, () => process.stdout.write('ready\n'));
`;

/**
 * The same for every other program a login runs (curl, git, wget, pip…): pam_env's
 * configuration, read by sshd's PAM session for each login, sets the usual proxy variables.
 * Commands run over ssh get them; services started by an init system do not.
 */
export function pamEnvProxy(machine: string): string {
  const url = `http://${machine}:${PROXY_PORT}/`;
  return [
    '# written by the hostsmith sandbox: programs reach the internet through this machine',
    ...['http_proxy', 'https_proxy', 'HTTPS_PROXY'].map((v) => `${v} DEFAULT=${url}`),
    `no_proxy DEFAULT=localhost,127.0.0.1,${machine}`,
    '',
  ].join('\n');
}

/** apt's configuration on the host: the proxy for the mirror, direct for this machine's own end. */
export function aptProxyConf(machine: string): string {
  return [
    '// written by the hostsmith sandbox: this host reaches the package mirror through this machine',
    `Acquire::http::Proxy "http://${machine}:${PROXY_PORT}/";`,
    `Acquire::https::Proxy "http://${machine}:${PROXY_PORT}/";`,
    `Acquire::http::Proxy::${machine} "DIRECT";`,
    `Acquire::https::Proxy::${machine} "DIRECT";`,
    '',
  ].join('\n');
}

/**
 * Starts the proxy on `address` (this machine's end of a host's pair) and resolves with its pid
 * once it listens. `dieWithUs`: the kernel kills it when this process dies (tests), as their hosts.
 */
export async function startProxy(address: string, dieWithUs: boolean): Promise<number> {
  const node = [process.execPath, '-e', PROXY, address, String(PROXY_PORT)];
  const [cmd, ...args] = dieWithUs ? ['setpriv', '--pdeathsig', 'KILL', '--', ...node] : node;
  const child = spawn(cmd!, args, { detached: !dieWithUs, stdio: ['ignore', 'pipe', 'pipe'] });
  let said = '';
  child.stderr!.on('data', (d: Buffer) => (said += d.toString()));
  const ready = new Promise<void>((ok, fail) => {
    child.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && ok());
    child.once('exit', (code) => fail(new Error(`the sandbox proxy on ${address}:${PROXY_PORT} exited (${code}) before it listened: ${said.trim()}`)));
    child.once('error', fail);
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  try {
    await ready;
  } finally {
    clearTimeout(timer);
  }
  // Its pipes are no longer read: let it write to nothing rather than fill them, and let this process exit.
  child.stdout!.destroy();
  child.stderr!.destroy();
  child.unref();
  if (!child.pid) throw new Error(`the sandbox proxy on ${address} has no pid`);
  return child.pid;
}
