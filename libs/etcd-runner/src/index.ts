import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { hasExited, ownChild, stopChild } from '@sluice/process';

export interface EtcdOptions {
  /** The etcd binary; `etcd` on PATH by default (Debian's etcd-server). */
  binary?: string;
  /** Backend quota in bytes (--quota-backend-bytes). */
  quotaBackendBytes?: number;
  /** Operations allowed in one transaction (--max-txn-ops); etcd's default is 128. */
  maxTxnOps?: number;
  /** Applied entries between snapshots (--snapshot-count). */
  snapshotCount?: number;
  /** Largest request in bytes (--max-request-bytes). */
  maxRequestBytes?: number;
  /** Folder in which the temporary data dir is made; tmpfs (/dev/shm) by default, where fsync costs nothing. */
  dataDirParent?: string;
  /** Extra flags passed as they are. */
  extraArgs?: string[];
  /** How long to wait for /health before giving up. */
  startTimeoutMs?: number;
  /** Where etcd's own log goes; discarded by default. */
  logFile?: string;
}

export interface EtcdServer {
  /** The client URL, e.g. http://127.0.0.1:41234. */
  readonly endpoint: string;
  readonly dataDir: string;
  readonly pid: number | undefined;
  readonly running: boolean;
  /** Stops the server but keeps its data, as a crash or maintenance would. */
  pause(signal?: NodeJS.Signals): Promise<void>;
  /** Starts it again on the same ports with the same data. */
  resume(): Promise<void>;
  /** Stops the server and removes its data dir. Safe to call twice. */
  stop(): Promise<void>;
}

/** Asks the kernel for a free loopback port. Another process could take it before etcd binds; start() retries then. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

async function healthy(endpoint: string): Promise<boolean> {
  try {
    const response = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(1000) });
    const body = (await response.json()) as { health?: string };
    return response.ok && body.health === 'true';
  } catch {
    return false;
  }
}

/** Data dirs of servers not stopped yet: removed when the process exits (ownChild has killed etcd by then). */
const dataDirs = new Set<string>();
let dataDirHookInstalled = false;
function removeDataDirOnExit(dir: string): void {
  dataDirs.add(dir);
  if (dataDirHookInstalled) return;
  dataDirHookInstalled = true;
  // 'exit' handlers run in order of registration: this one is installed after the first ownChild (which kills etcd).
  process.once('exit', () => {
    for (const d of dataDirs) rmSync(d, { recursive: true, force: true, maxRetries: 3 });
  });
}

/** Starts a real etcd on free loopback ports with a temporary data dir and waits until it reports healthy. */
export async function startEtcd(options: EtcdOptions = {}): Promise<EtcdServer> {
  const parent = options.dataDirParent ?? (existsSync('/dev/shm') ? '/dev/shm' : tmpdir());
  const dataDir = await mkdtemp(join(parent, 'sluice-etcd-'));
  const [clientPort, peerPort] = [await freePort(), await freePort()];
  const endpoint = `http://127.0.0.1:${clientPort}`;
  const peerUrl = `http://127.0.0.1:${peerPort}`;
  const args = [
    '--name', 'sluice',
    '--data-dir', dataDir,
    '--listen-client-urls', endpoint,
    '--advertise-client-urls', endpoint,
    '--listen-peer-urls', peerUrl,
    '--initial-advertise-peer-urls', peerUrl,
    '--initial-cluster', `sluice=${peerUrl}`,
    '--logger', 'zap',
    '--log-level', 'warn',
    ...(options.quotaBackendBytes ? ['--quota-backend-bytes', String(options.quotaBackendBytes)] : []),
    ...(options.maxTxnOps ? ['--max-txn-ops', String(options.maxTxnOps)] : []),
    ...(options.snapshotCount ? ['--snapshot-count', String(options.snapshotCount)] : []),
    ...(options.maxRequestBytes ? ['--max-request-bytes', String(options.maxRequestBytes)] : []),
    ...(options.extraArgs ?? []),
  ];
  let child: ChildProcess | undefined;
  let exitError: string | undefined;
  let stopped = false;

  const launch = async () => {
    exitError = undefined;
    const logFd = options.logFile ? (await import('node:fs')).openSync(options.logFile, 'a') : 'ignore';
    const started = spawn(options.binary ?? 'etcd', args, { stdio: ['ignore', 'ignore', logFd] });
    child = ownChild(started);
    removeDataDirOnExit(dataDir);
    started.once('error', (err) => (exitError = err.message));
    started.once('exit', (code, signal) => {
      exitError ??= `etcd exited (code ${code}, signal ${signal})`;
    });
    const deadline = Date.now() + (options.startTimeoutMs ?? 15_000);
    while (!(await healthy(endpoint))) {
      if (child.exitCode !== null || child.signalCode !== null || exitError) {
        throw new Error(`etcd did not start: ${exitError ?? 'exited'}`);
      }
      if (Date.now() > deadline) {
        started.kill('SIGKILL');
        throw new Error(`etcd did not report healthy at ${endpoint} within ${options.startTimeoutMs ?? 15_000} ms`);
      }
      await sleep(50);
    }
  };

  const halt = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (child) await stopChild(child, { signal });
  };

  try {
    await launch();
  } catch (err) {
    await halt('SIGKILL');
    await rm(dataDir, { recursive: true, force: true });
    dataDirs.delete(dataDir);
    throw err;
  }

  const server: EtcdServer = {
    endpoint,
    dataDir,
    get pid() {
      return child?.pid;
    },
    get running() {
      return !!child && !hasExited(child);
    },
    pause: (signal) => halt(signal),
    async resume() {
      if (stopped) throw new Error('etcd was stopped for good; start a new one');
      if (server.running) return;
      await launch();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await halt();
      await rm(dataDir, { recursive: true, force: true });
      dataDirs.delete(dataDir);
    },
  };
  return server;
}
