/**
 * The agent's presence INSIDE the node's network namespace. The agent runs in the host namespace (it reaches etcd on
 * the host's loopback and moves only its main thread into the node namespace for tc calls), but two health paths
 * must live in the node namespace: the health port peers probe at the node IP, and the HTTP probes this node sends
 * to its peers (they must leave through the node's uplink, like the ICMP probes, which run `ping` under nsenter).
 * So this is one tiny child process started with `nsenter --net=/run/netns/<ns>` (not `ip netns exec`, which hides
 * the bpffs). It answers GET /hello with 200 (port 0: listens nowhere), and runs HTTP probes the agent asks for over
 * its stdin (one JSON line per probe, answered by one JSON line on stdout): a long-lived helper costs nothing per
 * probe, where `nsenter curl` would spawn two processes per probe. It exits as soon as its stdin — a pipe from the
 * agent — closes, so it never outlives the agent, even after SIGKILL.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { z } from 'zod';

// Plain JS (no loader in the child). The probe mirrors @sluice/prober's httpProbe: a fresh connection per probe (no
// keep-alive, so a dead peer cannot hide behind a pooled socket), the RTT including the TCP handshake.
const SCRIPT = `
const http = require('node:http');
const readline = require('node:readline');
const [port, node] = process.argv.slice(1);
const ready = () => process.stdout.write('listening\\n');
if (Number(port) > 0) {
  const server = http.createServer((req, res) => {
    res.writeHead(req.url === '/hello' || req.url === '/healthz' ? 200 : 404, { 'content-type': 'text/plain' });
    res.end(node + '\\n');
  });
  server.listen(Number(port), '0.0.0.0', ready);
  server.on('error', (e) => { process.stderr.write('health listener: ' + e.message + '\\n'); process.exit(1); });
} else ready();
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
  req.on('error', (e) => finish(false, 0, e.code === 'ECONNREFUSED' ? 'Connection refused' : e.message));
  req.end();
}
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  try { probe(JSON.parse(line)); } catch (e) { process.stderr.write('health listener: bad request: ' + e.message + '\\n'); }
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
  child: ChildProcess;
  /** GET http://ip:port/hello from inside the node namespace. */
  httpProbe(ip: string, port: number, timeoutMs: number): Promise<HttpProbeOutcome>;
  stop(): void;
}

/** Starts the helper; `port` 0 runs it without a listener (probing only). */
export async function startHealthListener(netns: string | undefined, port: number, node: string): Promise<HealthListener> {
  const args = ['-e', SCRIPT, String(port), node];
  const child = netns
    ? spawn('nsenter', [`--net=/run/netns/${netns}`, '--', process.execPath, ...args], { stdio: ['pipe', 'pipe', 'inherit'] })
    : spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! });
  const pending = new Map<number, (outcome: HttpProbeOutcome) => void>();
  let seq = 0;
  let gone = false;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('health listener did not start within 10 s')), 10_000);
    lines.once('line', () => (clearTimeout(timer), resolve()));
    child.once('exit', (code) => (clearTimeout(timer), reject(new Error(`health listener exited with code ${code}`))));
  });
  lines.on('line', (line) => {
    const parsed = answerSchema.safeParse((() => { try { return JSON.parse(line) as unknown; } catch { return undefined; } })());
    if (!parsed.success) return;
    const { id, ...outcome } = parsed.data;
    pending.get(id)?.(outcome);
    pending.delete(id);
  });
  child.once('exit', () => {
    gone = true;
    for (const resolve of pending.values()) resolve({ ok: false, rttUs: 0, error: 'health helper exited' });
    pending.clear();
  });
  return {
    child,
    httpProbe(ip, probePort, timeoutMs) {
      if (gone || !child.stdin?.writable) return Promise.resolve({ ok: false, rttUs: 0, error: 'health helper exited' });
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
      child.stdin?.end();
      if (child.exitCode === null) child.kill('SIGTERM');
    },
  };
}
