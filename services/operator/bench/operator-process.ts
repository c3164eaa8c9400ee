/**
 * The operator as deploy/ runs it (`node services/operator/dist/main.mjs`, the build bootstrap makes), in a process
 * of its own: what the benches measure is then the product's CPU and memory alone, read from /proc and its /metrics,
 * not a TypeScript loader's nor the harness's.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { freePort } from '@sluice/etcd-runner';
import { metricSum, scrapeMetrics } from '@sluice/metrics';
import { ownChild, stopChild } from '@sluice/process';

const TSX = createRequire(import.meta.url).resolve('tsx');
export const OPERATOR_MAIN = fileURLToPath(new URL('../dist/main.mjs', import.meta.url));

export interface OperatorProcess {
  child: ChildProcess;
  pid: number;
  metricsUrl: string;
  statusUrl: string;
  logFile: string;
  /** Why it exited, once it has. */
  readonly exited: string | undefined;
  /** SIGTERM, then SIGKILL after 15 s. */
  stop(): Promise<void>;
}

export interface OperatorProcessOptions {
  kubeServer: string;
  etcdEndpoint: string;
  logFile: string;
  /** Default: this checkout's build. A TypeScript main (another checkout's sources) runs through tsx. */
  main?: string;
  nodeFlags?: string[];
  args?: string[];
  identity?: string;
  logLevel?: string;
}

export async function startOperatorProcess(o: OperatorProcessOptions): Promise<OperatorProcess> {
  const port = await freePort();
  const main = o.main ?? OPERATOR_MAIN;
  const loader = main.endsWith('.ts') ? ['--import', TSX] : [];
  const child = ownChild(spawn(process.execPath, [...(o.nodeFlags ?? []), ...loader, main,
    '--kube-server', o.kubeServer, '--etcd-endpoints', o.etcdEndpoint, '--metrics-port', String(port), '--log-level', o.logLevel ?? 'info',
    '--identity', o.identity ?? 'bench', ...(o.args ?? []),
  ], { stdio: ['ignore', 'pipe', 'pipe'] }));
  const log = createWriteStream(o.logFile);
  child.stdout!.pipe(log);
  child.stderr!.pipe(log);
  let exited: string | undefined;
  child.once('exit', (code, signal) => (exited = `exited with ${signal ?? code}`));
  if (child.pid === undefined) throw new Error(`could not start ${main}`);
  return {
    child,
    pid: child.pid,
    metricsUrl: `http://127.0.0.1:${port}/metrics`,
    statusUrl: `http://127.0.0.1:${port}/status`,
    logFile: o.logFile,
    get exited() {
      return exited;
    },
    stop: () => stopChild(child, { graceMs: 15_000 }),
  };
}

/** Polls its /metrics (through `read`, which may record each sample) until it reports a finished sync. */
export async function waitUntilSynced(operator: OperatorProcess, timeoutMs: number, read = () => scrapeMetrics(operator.metricsUrl)): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (operator.exited) throw new Error(`the operator ${operator.exited}; see ${operator.logFile}`);
    if (Date.now() > deadline) throw new Error(`the operator did not sync within ${Math.round(timeoutMs / 1000)} s; see ${operator.logFile}`);
    const text = await read();
    if (text && metricSum(text, 'sluice_operator_synced') === 1) return;
    await sleep(1_000);
  }
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
