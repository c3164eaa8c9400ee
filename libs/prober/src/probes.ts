/** The two probes: ICMP echo through the system's ping (no raw-socket privileges needed here) and an HTTP GET. */
import { spawn } from 'node:child_process';
import { request } from 'node:http';
import { isIP } from 'node:net';

export interface ProbeOutcome {
  ok: boolean;
  rttUs: number;
  error: string;
}

export interface PingOptions {
  timeoutMs?: number;
  /** The ping binary (iputils); "ping" on PATH by default. */
  command?: string;
  /**
   * Send the echo from this network namespace (a name under /run/netns), through `nsenter --net=…` (not `ip netns
   * exec`, which remounts /sys and hides the bpffs): an agent in the host namespace probing from its node's.
   */
  netns?: string;
}

const RTT = /time[=<]([\d.]+)\s*ms/;

/** Parses iputils ping output; the RTT in microseconds, or undefined when no reply was printed. */
export function parsePingRtt(output: string): number | undefined {
  const match = RTT.exec(output);
  return match ? Math.max(0, Math.round(Number(match[1]) * 1000)) : undefined;
}

/** One ICMP echo: `ping -c1 -W<s> -n <ip>` (under `nsenter --net` with options.netns). */
export function ping(ip: string, options: PingOptions = {}): Promise<ProbeOutcome> {
  const timeoutMs = options.timeoutMs ?? 1000;
  if (!isIP(ip)) return Promise.resolve({ ok: false, rttUs: 0, error: `not an IP address: ${ip}` });
  return new Promise((resolve) => {
    const args = [options.command ?? 'ping', '-c1', '-n', '-W', String(Math.max(1, Math.ceil(timeoutMs / 1000))), ip];
    const [command, ...rest] = options.netns ? ['nsenter', `--net=/run/netns/${options.netns}`, '--', ...args] : args;
    const child = spawn(command!, rest, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    // ping's own -W covers the reply; this covers a ping that hangs on something else (e.g. name service).
    const guard = setTimeout(() => child.kill('SIGKILL'), timeoutMs + 1000);
    const finish = (outcome: ProbeOutcome) => {
      clearTimeout(guard);
      resolve(outcome);
    };
    child.on('error', (err) => finish({ ok: false, rttUs: 0, error: `ping: ${err.message}` }));
    child.on('close', (code) => {
      const rtt = parsePingRtt(output);
      if (code === 0 && rtt !== undefined) return finish({ ok: true, rttUs: rtt, error: '' });
      const lastLine = output.trim().split('\n').filter((l) => /error|unreachable|denied|unknown/i.test(l)).pop();
      finish({ ok: false, rttUs: 0, error: lastLine?.trim() || 'Connection timed out' });
    });
  });
}

/**
 * One HTTP GET on a fresh connection (no keep-alive), so that the RTT includes the TCP handshake and a dead peer
 * cannot hide behind a pooled socket.
 */
export function httpProbe(ip: string, port: number, options: { timeoutMs?: number; path?: string } = {}): Promise<ProbeOutcome> {
  const timeoutMs = options.timeoutMs ?? 1000;
  const started = process.hrtime.bigint();
  return new Promise((resolve) => {
    let settled = false;
    const finish = (outcome: ProbeOutcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(outcome);
    };
    const req = request({ host: ip, port, path: options.path ?? '/hello', method: 'GET', agent: false }, (res) => {
      res.resume();
      res.on('end', () => {
        const rttUs = Number((process.hrtime.bigint() - started) / 1000n);
        const status = res.statusCode ?? 0;
        finish(status >= 200 && status < 300 ? { ok: true, rttUs, error: '' } : { ok: false, rttUs, error: `HTTP ${status}` });
      });
      res.on('error', (err) => finish({ ok: false, rttUs: 0, error: err.message }));
    });
    const timer = setTimeout(() => {
      req.destroy();
      finish({ ok: false, rttUs: 0, error: 'Connection timed out' });
    }, timeoutMs);
    req.on('error', (err: NodeJS.ErrnoException) => finish({ ok: false, rttUs: 0, error: err.code === 'ECONNREFUSED' ? 'Connection refused' : err.message }));
    req.end();
  });
}
