// Preload for the first-run profile (test/bench/profile.ts), loaded with `node --import` into the
// real CLI: records every exec channel (host, start, end, script, bytes, exit code) and every
// journal fsync, one JSON line each, into BENCH_TRACE_OUT. It changes nothing hostsmith does.
// BENCH_TRACE_ROOT: the checkout of the CLI being traced. The CLI runs from a bundle with its own
// copy of every src class, so the hooks go one level down, on ssh2's Client, which the bundle
// leaves external and loads from that checkout's node_modules (the same module instance as here).
// BENCH_TRACE_HOSTS: JSON map "address:port" → inventory name; without it a host is its address:port.
import { appendFileSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const out = process.env.BENCH_TRACE_OUT;
const root = process.env.BENCH_TRACE_ROOT;
if (out && root) {
  writeFileSync(out, '');
  const now = () => performance.timeOrigin + performance.now();
  const lines = [];
  const flush = () => {
    if (lines.length) appendFileSync(out, lines.splice(0).join(''));
  };
  const note = (o) => {
    lines.push(`${JSON.stringify(o)}\n`);
    if (lines.length > 500) flush();
  };
  process.on('exit', flush);
  note({ kind: 'start', t: now(), pid: process.pid });

  const names = JSON.parse(process.env.BENCH_TRACE_HOSTS || '{}');
  const { Client } = createRequire(join(root, 'package.json'))('ssh2');
  // The host each client was pointed at, from its connect config (a jump's forwarded socket
  // still names the target's own address).
  const hostOf = new WeakMap();

  // A probe batch's lines `r <i> '<framed stdin, base64>' '<cmdline>'`: each item's own script, shortened.
  // One item per read of a batch (engine/probe.ts batchLine): `s=<quoted script> … sh -c` or
  // `printf %s <base64 framed stdin> | base64 -d | ( eval … )`; the label is the script's start.
  const batchItems = (script) =>
    [...script.matchAll(/(?:^|\n)(?:s=('(?:[^']|'\\'')*')|printf %s '?([A-Za-z0-9+/=]*)'? \| base64 -d)/g)].map((m) => {
      let text;
      if (m[1] !== undefined) text = m[1].slice(1, -1).replace(/'\\''/g, "'");
      else {
        const framed = Buffer.from(m[2], 'base64');
        const nl = framed.indexOf(10);
        text = framed.subarray(nl + 1, nl + 1 + Number(framed.subarray(0, nl).toString())).toString('utf8');
      }
      return text.replace(/^unset n s;( export HOSTSMITH_RUN=\S+;)? /, '').slice(0, 400);
    });

  const connect = Client.prototype.connect;
  Client.prototype.connect = function (cfg, ...rest) {
    const addr = `${cfg?.hostname || cfg?.host || 'localhost'}:${cfg?.port || 22}`;
    const host = names[addr] ?? addr;
    hostOf.set(this, host);
    const t0 = now();
    // Only a login that succeeds is a connection; a host-key look that hangs up never gets 'ready'.
    this.once('ready', () => note({ kind: 'connect', host, t0, t1: now() }));
    return connect.call(this, cfg, ...rest);
  };

  const exec = Client.prototype.exec;
  Client.prototype.exec = function (cmdline, opts, cb) {
    if (typeof opts === 'function') {
      cb = opts;
      opts = {};
    }
    const host = hostOf.get(this) ?? '?';
    const t0 = now();
    const fail = (e) => note({ kind: 'exec', host, t0, t1: now(), cmd: '', cmdLen: 0, stdin: 0, wrapper: String(cmdline).slice(0, 120), error: String(e?.message ?? e) });
    try {
      return exec.call(this, cmdline, opts, (err, stream) => {
        if (err) {
          fail(err);
          return cb(err, stream);
        }
        // The command line is a fixed bootstrap; the script travels first on stdin:
        // `<bytes>\n<script><data>`. Collect what is written, whichever of write/end carries it.
        const sent = [];
        const keep = (chunk, enc) => {
          if (chunk === undefined || chunk === null || typeof chunk === 'function') return;
          sent.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk, typeof enc === 'string' ? enc : 'utf8'));
        };
        const write = stream.write;
        stream.write = function (chunk, enc, ...more) {
          keep(chunk, enc);
          return write.call(this, chunk, enc, ...more);
        };
        const end = stream.end;
        stream.end = function (chunk, enc, ...more) {
          keep(chunk, enc);
          return end.call(this, chunk, enc, ...more);
        };
        let outBytes = 0;
        let errBytes = 0;
        stream.on('data', (d) => (outBytes += d.length));
        stream.stderr?.on('data', (d) => (errBytes += d.length));
        let exit;
        stream.on('exit', (code, signal) => (exit = { code, signal }));
        stream.once('close', (code, signal) => {
          const buf = Buffer.concat(sent);
          const nl = buf.indexOf(10);
          const len = nl > 0 ? Number(buf.subarray(0, nl).toString()) : Number.NaN;
          const script = Number.isFinite(len) ? buf.subarray(nl + 1, nl + 1 + len).toString('utf8') : '';
          // A change that first re-runs its step's read and compares a digest of it (a guard):
          // what the exec does is the part after the guard; the read is kept apart, shortened.
          const body = script.replace(/^unset n s;( export HOSTSMITH_RUN=\S+;)? /, '');
          const guard = /(?:^|; )g=\$\( \( ([\s\S]*?)\n\) \| sha256sum \) && \[ "\$\{g%% \*\}" = [0-9a-f]{64} \] \|\| \{ echo hostsmith-moved >&2; exit 75; \}\n?/.exec(body);
          // The rest of a change is stages, each ending with its own failure line; the stages
          // that copy what is replaced (backup, accounts, ucf, snapshot) say little about what it
          // does, so `cmd` keeps the others; `stages` lists every stage's name.
          const rest = guard ? body.slice(0, guard.index) + body.slice(guard.index + guard[0].length) : body;
          const parts = rest.split(/\nrc=\$\?; \[ \$rc -eq 0 \] \|\| \{ echo "hostsmith-failed: (\S+) \$rc" >&2; exit 1; \}\n?/);
          const stages = parts.filter((_, i) => i % 2 === 1);
          const doing = stages.length ? parts.filter((_, i) => i % 2 === 0 && !['backup', 'accounts', 'ucf', 'snapshot'].includes(parts[i + 1])).join('\n') : rest;
          const code1 = exit?.code ?? code ?? null;
          const signal1 = exit?.signal ?? signal;
          note({
            kind: 'exec',
            host,
            t0,
            t1: now(),
            cmd: doing.slice(0, 1200),
            ...(stages.length ? { stages } : {}),
            ...(guard ? { guard: guard[1].slice(0, 300) } : {}),
            cmdLen: script.length,
            stdin: buf.length,
            wrapper: String(cmdline).slice(0, 120),
            code: code1,
            ...(signal1 ? { signal: signal1 } : {}),
            ...(code1 == null && !signal1 ? { error: 'channel closed without an exit status' } : {}),
            out: outBytes,
            err: errBytes,
            ...(script.includes('hostsmith-probe.') ? { items: batchItems(script) } : {}),
          });
        });
        return cb(err, stream);
      });
    } catch (e) {
      fail(e);
      throw e;
    }
  };

  // Journal fsyncs: FileHandle.sync / datasync (the class is reached through an open handle).
  const fh = await open('/dev/null', 'r');
  const proto = Object.getPrototypeOf(fh);
  await fh.close();
  for (const name of ['sync', 'datasync']) {
    const orig = proto[name];
    proto[name] = async function () {
      const t0 = now();
      try {
        return await orig.call(this);
      } finally {
        note({ kind: 'fsync', how: name, t0, t1: now() });
      }
    };
  }
}
