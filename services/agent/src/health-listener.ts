/**
 * The agent's presence INSIDE the node's network namespace. The agent runs in the host namespace (it reaches etcd on
 * the host's loopback and moves only its main thread into the node namespace for tc calls), but two health paths
 * must live in the node namespace: the health port peers probe at the node IP, and the HTTP probes this node sends
 * to its peers (they must leave through the node's uplink, like the ICMP probes, which run `ping` under nsenter).
 * So these are tiny child processes started with `nsenter --net=/run/netns/<ns>` (not `ip netns exec`, which hides
 * the bpffs), each exiting as soon as its stdin — a pipe from the agent — closes, so they never outlive the agent,
 * even after SIGKILL:
 *
 * - the listener answers GET /hello with 200 on the health port (none with port 0). Every pod can reach it, so it
 *   is rate-limited per source address (a token bucket; a source over its budget has its connections closed before
 *   anything is parsed), holds a bounded number of connections and drops slow requests;
 * - the prober runs the HTTP probes the agent asks for over its stdin (one JSON line per probe, answered by one JSON
 *   line on stdout): a long-lived helper costs nothing per probe, where `nsenter curl` would spawn two processes.
 *
 * They are separate processes so that serving never delays probing: a flood of requests from one pod keeps the
 * listener busy, not the event loop that times this node's probes of its peers (which would then report false
 * failures).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { z } from 'zod';

/** Per source address: sustained requests per second and burst. Peers probe a node far less than once a second. */
export const LISTENER_RATE = { perSecond: 5, burst: 20 };
/** Connections the listener holds at once, from everyone. */
export const LISTENER_MAX_CONNECTIONS = 256;

// Plain JS (no loader in the child).
const LISTENER_SCRIPT = `
const http = require('node:http');
const [port, node, perSecond, burst, maxConnections] = process.argv.slice(1).map((v, i) => (i === 1 ? v : Number(v)));
const buckets = new Map();
let limited = 0;
const allow = (ip) => {
  const now = Date.now();
  let b = buckets.get(ip);
  if (!b) {
    if (buckets.size >= 10000) buckets.clear();
    b = { tokens: burst, at: now };
    buckets.set(ip, b);
  }
  b.tokens = Math.min(burst, b.tokens + ((now - b.at) / 1000) * perSecond);
  b.at = now;
  if (b.tokens < 1) return false;
  b.tokens -= 1;
  return true;
};
setInterval(() => {
  const stale = Date.now() - (burst / perSecond) * 1000;
  for (const [ip, b] of buckets) if (b.at < stale) buckets.delete(ip);
  if (limited) { process.stdout.write(JSON.stringify({ limited }) + '\\n'); limited = 0; }
}, 10000).unref();
const server = http.createServer((req, res) => {
  res.writeHead(req.url === '/hello' || req.url === '/healthz' ? 200 : 404, { 'content-type': 'text/plain', connection: 'close' });
  res.end(node + '\\n');
});
server.maxConnections = maxConnections;
server.headersTimeout = 2000;
server.requestTimeout = 2000;
server.keepAliveTimeout = 500;
server.on('connection', (socket) => {
  if (!allow(socket.remoteAddress || '')) { limited++; socket.destroy(); }
});
server.on('error', (e) => { process.stderr.write('health listener: ' + e.message + '\\n'); process.exit(1); });
server.listen(port, '0.0.0.0', () => process.stdout.write('listening\\n'));
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
`;

// The probe mirrors @sluice/prober's httpProbe: a fresh connection per probe (no keep-alive, so a dead peer cannot
// hide behind a pooled socket), the RTT including the TCP handshake.
const PROBER_SCRIPT = `
const http = require('node:http');
const readline = require('node:readline');
const answer = (id, ok, rttUs, error) => process.stdout.write(JSON.stringify({ id, ok, rttUs, error }) + '\\n');
function probe({ id, ip, port, timeoutMs }) {
  const started = process.hrtime.bigint();
  let done = false;
  const finish = (ok, rttUs, error) => { if (!done) { done = true; clearTimeout(timer); answer(id, ok, rttUs, error); } };
  const req = http.request({ host: ip, port, path: '/hello', method: 'GET', agent: false }, (res) => {
    res.resume();
    res.on('end', () => {
      const rttUs = Number((process.hrtime.bigint() - started) / 1000n);
      const status = res.statusCode || 0;
      finish(status >= 200 && status < 300, rttUs, status >= 200 && status < 300 ? '' : 'HTTP ' + status);
    });
    res.on('error', (e) => finish(false, 0, e.message));
  });
  const timer = setTimeout(() => { req.destroy(); finish(false, 0, 'Connection timed out'); }, timeoutMs);
  req.on('error', (e) => finish(false, 0, e.code === 'ECONNREFUSED' ? 'Connection refused' : e.code === 'ECONNRESET' ? 'Connection reset' : e.message));
  req.end();
}
process.stdout.write('listening\\n');
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  try { probe(JSON.parse(line)); } catch (e) { process.stderr.write('health prober: bad request: ' + e.message + '\\n'); }
}).on('close', () => process.exit(0));
process.stdin.on('end', () => process.exit(0));
`;

const answerSchema = z.object({ id: z.number().int(), ok: z.boolean(), rttUs: z.number().int().min(0), error: z.string() });

export interface HttpProbeOutcome {
  ok: boolean;
  rttUs: number;
  error: string;
}

export interface HealthListener {
  /** The prober child (HTTP probes of the peers); undefined when started without probing. */
  child: ChildProcess | undefined;
  /** The listener child on the health port, when there is one. */
  server: ChildProcess | undefined;
  /** Connections closed by the per-source rate limit (reported by the listener every 10 s). */
  readonly limited: number;
  /** GET http://ip:port/hello from inside the node namespace. */
  httpProbe(ip: string, port: number, timeoutMs: number): Promise<HttpProbeOutcome>;
  stop(): void;
}

/** A child under `nsenter --net` (or in this namespace), resolved once it printed its first line. */
async function startChild(netns: string | undefined, script: string, args: string[], what: string): Promise<{ child: ChildProcess; lines: ReturnType<typeof createInterface> }> {
  const argv = ['-e', script, ...args];
  const child = netns
    ? spawn('nsenter', [`--net=/run/netns/${netns}`, '--', process.execPath, ...argv], { stdio: ['pipe', 'pipe', 'inherit'] })
    : spawn(process.execPath, argv, { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} did not start within 10 s`)), 10_000);
    lines.once('line', () => (clearTimeout(timer), resolve()));
    child.once('exit', (code) => (clearTimeout(timer), reject(new Error(`${what} exited with code ${code}`))));
  });
  return { child, lines };
}

const limitedSchema = z.object({ limited: z.number().int().min(0) });

/** Starts the helpers; `port` 0 runs no listener (probing only), `probe: false` no prober (serving only). */
export async function startHealthListener(netns: string | undefined, port: number, node: string, options: { probe?: boolean } = {}): Promise<HealthListener> {
  let limited = 0;
  let server: ChildProcess | undefined;
  if (port > 0) {
    const listener = await startChild(netns, LISTENER_SCRIPT, [String(port), node, String(LISTENER_RATE.perSecond), String(LISTENER_RATE.burst), String(LISTENER_MAX_CONNECTIONS)], 'health listener');
    server = listener.child;
    listener.lines.on('line', (line) => {
      const parsed = limitedSchema.safeParse((() => { try { return JSON.parse(line) as unknown; } catch { return undefined; } })());
      if (parsed.success) limited += parsed.data.limited;
    });
  }
  const prober = options.probe === false ? undefined : await startChild(netns, PROBER_SCRIPT, [], 'health prober').catch((err: Error) => {
    server?.stdin?.end();
    server?.kill('SIGTERM');
    throw err;
  });
  const child = prober?.child;
  const pending = new Map<number, (outcome: HttpProbeOutcome) => void>();
  let seq = 0;
  let gone = !child;
  prober?.lines.on('line', (line) => {
    const parsed = answerSchema.safeParse((() => { try { return JSON.parse(line) as unknown; } catch { return undefined; } })());
    if (!parsed.success) return;
    const { id, ...outcome } = parsed.data;
    pending.get(id)?.(outcome);
    pending.delete(id);
  });
  child?.once('exit', () => {
    gone = true;
    for (const resolve of pending.values()) resolve({ ok: false, rttUs: 0, error: 'health helper exited' });
    pending.clear();
  });
  return {
    child,
    server,
    get limited() {
      return limited;
    },
    httpProbe(ip, probePort, timeoutMs) {
      if (gone || !child?.stdin?.writable) return Promise.resolve({ ok: false, rttUs: 0, error: child ? 'health helper exited' : 'this helper does not probe' });
      const id = ++seq;
      return new Promise((resolve) => {
        // The helper answers every probe within timeoutMs; this covers a helper that hangs.
        const guard = setTimeout(() => {
          pending.delete(id);
          resolve({ ok: false, rttUs: 0, error: 'Connection timed out' });
        }, timeoutMs + 2000);
        pending.set(id, (outcome) => (clearTimeout(guard), resolve(outcome)));
        child.stdin!.write(`${JSON.stringify({ id, ip, port: probePort, timeoutMs })}\n`);
      });
    },
    stop: () => {
      for (const c of [child, server]) {
        if (!c) continue;
        c.stdin?.end();
        if (c.exitCode === null) c.kill('SIGTERM');
      }
    },
  };
}
