import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { dieWithParent, hasExited, ownChild, stopChild } from '@sluice/process';
import { createTestPki, type EtcdTls } from './tls.ts';

export { createTestPki, type CertFiles, type EtcdTls } from './tls.ts';

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
  /**
   * Interval of watch progress notifications (--experimental-watch-progress-notify-interval), in ms. Default 5 s:
   * a quiet prefix's watch learns the current revision that often, so a reconnect after compaction resumes instead
   * of relisting. (etcd's own default is 10 minutes; deploy/ sets the same 5 s.)
   */
  watchProgressNotifyIntervalMs?: number;
  /** Serve clients and peers over TLS with a throw-away CA (see `tls` on the result). */
  tls?: boolean;
  /** Require client certificates (--client-cert-auth; the certificate's CN is the etcd user). Implies tls. */
  clientCertAuth?: boolean;
  /** Use this PKI (another runner's `tls`) instead of making one: clients of that etcd trust this one too. */
  pki?: EtcdTls;
  /**
   * The first member's client port instead of a free one: an etcd that takes the place of another behind the same
   * address (disaster recovery tests). The port must be free.
   */
  clientPort?: number;
  /** Folder in which the temporary data dir is made; tmpfs (/dev/shm) by default, where fsync costs nothing. */
  dataDirParent?: string;
  /** Extra flags passed as they are. */
  extraArgs?: string[];
  /** How long to wait for /health before giving up. */
  startTimeoutMs?: number;
  /**
   * Where etcd's own log goes (a cluster appends every member's log to it); by default a file in the temporary folder,
   * removed with it, whose last error a failed start reports.
   */
  logFile?: string;
  /** Picks the free ports (tests: a port that another process holds); freePort by default. */
  pickPort?: () => Promise<number>;
}

export interface EtcdClusterOptions extends EtcdOptions {
  /** Members of the cluster: 1 or 3 (any odd number works). Default 3. */
  members?: number;
}

/** What a client needs to reach the server or cluster (the shape createKvClient takes, as files). */
export interface EtcdClientFiles {
  endpoints: string[];
  /** With tls: the CA to trust, and the root user's client certificate. */
  ca?: string;
  cert?: string;
  key?: string;
}

/** The shape of @sluice/kvstore's KvClientOptions (endpoints, TLS material), without depending on it. */
export interface EtcdClientOptions {
  endpoints: string[];
  tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer };
}

export interface EtcdMember {
  readonly name: string;
  /** The member's client URL. */
  readonly endpoint: string;
  readonly dataDir: string;
  readonly pid: number | undefined;
  readonly running: boolean;
  /** Stops the member but keeps its data (SIGTERM by default; SIGKILL is a crash). */
  pause(signal?: NodeJS.Signals): Promise<void>;
  /** SIGKILL, as a crash or an OOM kill would. */
  kill(): Promise<void>;
  /** Starts it again on the same ports with the same data; waits until it answers /health. */
  resume(): Promise<void>;
}

export interface EtcdServer extends EtcdMember {
  /** The temporary folder holding the data dir and the certificates (what stop() removes). */
  readonly dir: string;
  /** [endpoint]: the same field as a cluster's. */
  readonly endpoints: string[];
  /** The CA and client certificates, when started with tls. */
  readonly tls: EtcdTls | undefined;
  /** Endpoints and (with tls) the root user's certificate files. */
  clientFiles(user?: string): EtcdClientFiles;
  /** What @sluice/kvstore's createKvClient takes (certificates read), as `user` (root by default). */
  clientOptions(user?: string): EtcdClientOptions;
  /** Writes an etcd.config file (YAML, as every Sluice binary's --etcd-config reads it) for `user`; returns its path. */
  writeClientConfig(path: string, user?: string): string;
  /** Stops the server and removes its data dir. Safe to call twice. */
  stop(): Promise<void>;
}

export interface EtcdCluster {
  /** The temporary folder holding the data dirs and the certificates (what stop() removes). */
  readonly dir: string;
  readonly members: readonly EtcdMember[];
  /** Every member's client URL. */
  readonly endpoints: string[];
  readonly tls: EtcdTls | undefined;
  /** Endpoints and (with tls) certificate files: of the root user, or of `user` (issued on first use). */
  clientFiles(user?: string): EtcdClientFiles;
  clientOptions(user?: string): EtcdClientOptions;
  writeClientConfig(path: string, user?: string): string;
  /** The member that leads now, as the running members report it (retried until one is elected or the timeout). */
  leader(timeoutMs?: number): Promise<EtcdMember>;
  /** Stops every member and removes the data dirs and certificates. Safe to call twice. */
  stop(): Promise<void>;
}

/**
 * Asks the kernel for a free loopback port. Another process can take it before etcd binds it (an outgoing connection
 * gets its ephemeral port from the same range); startEtcdCluster then starts again on other ports.
 */
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

/** A small JSON request to etcd's HTTP side (health, the gRPC gateway), with the root client certificate under TLS. */
function etcdHttp(endpoint: string, path: string, tls: EtcdTls | undefined, body?: string): Promise<{ status: number; json: unknown }> {
  return new Promise((resolve, reject) => {
    const url = new URL(path, endpoint);
    const options = {
      method: body === undefined ? 'GET' : 'POST',
      timeout: 1000,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      ...(tls ? { ca: readFileSync(tls.ca), cert: readFileSync(tls.root.cert), key: readFileSync(tls.root.key) } : {}),
    };
    const request = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, options, (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (text += chunk));
      response.on('end', () => {
        try {
          resolve({ status: response.statusCode ?? 0, json: JSON.parse(text) as unknown });
        } catch (err) {
          reject(err);
        }
      });
    });
    request.on('timeout', () => request.destroy(new Error('timeout')));
    request.on('error', reject);
    request.end(body);
  });
}

async function healthy(endpoint: string, tls: EtcdTls | undefined): Promise<boolean> {
  try {
    const { status, json } = await etcdHttp(endpoint, '/health', tls);
    return status === 200 && (json as { health?: string }).health === 'true';
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

interface MemberPlan {
  name: string;
  dataDir: string;
  endpoint: string;
  peerUrl: string;
  logFile: string;
}

/** etcd did not start; `addressInUse` when it could not bind a port it was given. */
export class EtcdStartError extends Error {
  constructor(message: string, readonly addressInUse: boolean) {
    super(message);
    this.name = 'EtcdStartError';
  }
}

/**
 * The reason etcd gave for stopping, from the end of its log: its zap lines are JSON, and the last error-level line's
 * message and error say it ("listen tcp 127.0.0.1:…: bind: address already in use").
 */
export function lastLoggedError(logFile: string): string | undefined {
  let text: string;
  try {
    const fd = openSync(logFile, 'r');
    try {
      const size = fstatSync(fd).size;
      const length = Math.min(size, 8192);
      const buffer = Buffer.alloc(length);
      readSync(fd, buffer, 0, length, size - length);
      text = buffer.toString('utf8');
    } finally {
      closeSync(fd);
    }
  } catch {
    return undefined;
  }
  let last: string | undefined;
  for (const line of text.split('\n')) {
    let entry: unknown;
    try {
      entry = JSON.parse(line);
    } catch {
      continue;
    }
    if (typeof entry !== 'object' || entry === null) continue;
    const { level, msg, error } = entry as { level?: unknown; msg?: unknown; error?: unknown };
    if (level !== 'error' && level !== 'fatal' && level !== 'panic') continue;
    last = [msg, error].filter((part) => typeof part === 'string' && part).join(': ');
  }
  return last || undefined;
}

function memberArgs(plan: MemberPlan, cluster: string, options: EtcdOptions, tls: EtcdTls | undefined): string[] {
  const tlsArgs: string[] = [];
  if (tls) {
    const cert = tls.memberCert(plan.name);
    tlsArgs.push(
      '--cert-file', cert.cert, '--key-file', cert.key, '--trusted-ca-file', tls.ca,
      '--peer-cert-file', cert.cert, '--peer-key-file', cert.key, '--peer-trusted-ca-file', tls.ca, '--peer-client-cert-auth',
    );
    if (options.clientCertAuth) tlsArgs.push('--client-cert-auth');
  }
  return [
    '--name', plan.name,
    '--data-dir', plan.dataDir,
    '--listen-client-urls', plan.endpoint,
    '--advertise-client-urls', plan.endpoint,
    '--listen-peer-urls', plan.peerUrl,
    '--initial-advertise-peer-urls', plan.peerUrl,
    '--initial-cluster', cluster,
    '--initial-cluster-state', 'new',
    '--logger', 'zap',
    '--log-level', 'warn',
    '--experimental-watch-progress-notify-interval', `${options.watchProgressNotifyIntervalMs ?? 5000}ms`,
    ...tlsArgs,
    ...(options.quotaBackendBytes ? ['--quota-backend-bytes', String(options.quotaBackendBytes)] : []),
    ...(options.maxTxnOps ? ['--max-txn-ops', String(options.maxTxnOps)] : []),
    ...(options.snapshotCount ? ['--snapshot-count', String(options.snapshotCount)] : []),
    ...(options.maxRequestBytes ? ['--max-request-bytes', String(options.maxRequestBytes)] : []),
    ...(options.extraArgs ?? []),
  ];
}

interface MemberHandle extends EtcdMember {
  /** Starts the process without waiting for health (members of a new cluster wait for each other). */
  spawnProcess(): Promise<void>;
  waitHealthy(): Promise<void>;
  halt(signal: NodeJS.Signals): Promise<void>;
  stopped: boolean;
}

function member(plan: MemberPlan, cluster: string, options: EtcdOptions, tls: EtcdTls | undefined): MemberHandle {
  const args = memberArgs(plan, cluster, options, tls);
  const timeoutMs = options.startTimeoutMs ?? 15_000;
  let child: ChildProcess | undefined;
  let exitError: string | undefined;
  const handle: MemberHandle = {
    name: plan.name,
    endpoint: plan.endpoint,
    dataDir: plan.dataDir,
    stopped: false,
    get pid() {
      return child?.pid;
    },
    get running() {
      return !!child && !hasExited(child);
    },
    async spawnProcess() {
      exitError = undefined;
      const logFd = openSync(plan.logFile, 'a');
      const run = dieWithParent(options.binary ?? 'etcd', args);
      const started = spawn(run.command, run.args, { stdio: ['ignore', 'ignore', logFd] });
      closeSync(logFd);
      child = ownChild(started);
      started.once('error', (err) => (exitError = err.message));
      started.once('exit', (code, signal) => {
        exitError ??= `etcd exited (code ${code}, signal ${signal})`;
      });
    },
    async waitHealthy() {
      const deadline = Date.now() + timeoutMs;
      while (!(await healthy(plan.endpoint, tls))) {
        if (!child || child.exitCode !== null || child.signalCode !== null || exitError) {
          // The exit can come before etcd's last line is in the file; the file is complete once the process is gone.
          const reason = lastLoggedError(plan.logFile);
          throw new EtcdStartError(`etcd did not start: ${exitError ?? 'exited'}${reason ? `: ${reason}` : ''}`, !!reason?.includes('address already in use'));
        }
        if (Date.now() > deadline) {
          child.kill('SIGKILL');
          throw new Error(`etcd did not report healthy at ${plan.endpoint} within ${timeoutMs} ms`);
        }
        await sleep(50);
      }
    },
    async halt(signal) {
      if (child) await stopChild(child, { signal });
    },
    pause: (signal = 'SIGTERM') => handle.halt(signal),
    kill: () => handle.halt('SIGKILL'),
    async resume() {
      if (handle.stopped) throw new Error('etcd was stopped for good; start a new one');
      if (handle.running) return;
      await handle.spawnProcess();
      await handle.waitHealthy();
    },
  };
  return handle;
}

/**
 * Starts a real etcd cluster (3 members by default) on free loopback ports with temporary data dirs, optionally with
 * TLS and client-certificate auth, and waits until every member reports healthy.
 */
export async function startEtcdCluster(options: EtcdClusterOptions = {}): Promise<EtcdCluster> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startEtcdClusterOnce(options);
    } catch (err) {
      // A port taken between freePort() and etcd's bind: new ports (a port the caller chose is the caller's to free).
      if (!(err instanceof EtcdStartError && err.addressInUse) || options.clientPort !== undefined || attempt === 3) throw err;
    }
  }
}

async function startEtcdClusterOnce(options: EtcdClusterOptions): Promise<EtcdCluster> {
  const count = options.members ?? 3;
  if (!Number.isInteger(count) || count < 1) throw new Error(`an etcd cluster needs at least one member, got ${count}`);
  const parent = options.dataDirParent ?? (existsSync('/dev/shm') ? '/dev/shm' : tmpdir());
  const base = await mkdtemp(join(parent, 'sluice-etcd-'));
  const useTls = !!(options.tls || options.clientCertAuth || options.pki);
  const scheme = useTls ? 'https' : 'http';
  let tls: EtcdTls | undefined;
  const members: MemberHandle[] = [];
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    for (const m of members) m.stopped = true;
    await Promise.all(members.map((m) => m.halt('SIGTERM')));
    await rm(base, { recursive: true, force: true });
    dataDirs.delete(base);
  };
  try {
    if (options.pki) {
      tls = options.pki;
    } else if (useTls) {
      const dir = join(base, 'tls');
      await mkdir(dir, { mode: 0o700 });
      tls = createTestPki(dir);
    }
    const plans: MemberPlan[] = [];
    for (let i = 0; i < count; i++) {
      const name = count === 1 ? 'sluice' : `sluice-${i}`;
      const dataDir = count === 1 ? join(base, 'data') : join(base, name);
      const pickPort = options.pickPort ?? freePort;
      const clientPort = i === 0 && options.clientPort ? options.clientPort : await pickPort();
      plans.push({
        name,
        dataDir,
        endpoint: `${scheme}://127.0.0.1:${clientPort}`,
        peerUrl: `${scheme}://127.0.0.1:${await pickPort()}`,
        logFile: options.logFile ?? join(base, `${name}.log`),
      });
    }
    const initialCluster = plans.map((p) => `${p.name}=${p.peerUrl}`).join(',');
    for (const plan of plans) members.push(member(plan, initialCluster, options, tls));
    for (const m of members) await m.spawnProcess();
    // After the first ownChild: its exit hook (which kills etcd) must run before this one removes the folder.
    removeDataDirOnExit(base);
    await Promise.all(members.map((m) => m.waitHealthy()));
  } catch (err) {
    await Promise.all(members.map((m) => m.halt('SIGKILL')));
    stopped = true;
    await rm(base, { recursive: true, force: true });
    dataDirs.delete(base);
    throw err;
  }
  const endpoints = members.map((m) => m.endpoint);
  const clientFiles = (user?: string): EtcdClientFiles => {
    if (!tls) return { endpoints };
    const cert = user ? tls.clientCert(user) : tls.root;
    return { endpoints, ca: tls.ca, cert: cert.cert, key: cert.key };
  };
  const clientOptions = (user?: string): EtcdClientOptions => {
    const files = clientFiles(user);
    if (!files.ca) return { endpoints };
    return { endpoints, tls: { ca: readFileSync(files.ca), cert: readFileSync(files.cert!), key: readFileSync(files.key!) } };
  };
  const writeClientConfig = (path: string, user?: string): string => {
    const files = clientFiles(user);
    const lines = ['endpoints:', ...endpoints.map((e) => `  - ${e}`)];
    if (files.ca) lines.push(`trusted-ca-file: ${files.ca}`, `cert-file: ${files.cert}`, `key-file: ${files.key}`);
    writeFileSync(path, `${lines.join('\n')}\n`, { mode: 0o600 });
    return path;
  };
  return {
    dir: base,
    members,
    endpoints,
    tls,
    clientFiles,
    clientOptions,
    writeClientConfig,
    async leader(timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        for (const m of members) {
          if (!m.running) continue;
          try {
            const { json } = await etcdHttp(m.endpoint, '/v3/maintenance/status', tls, '{}');
            const status = json as { header?: { member_id?: string }; leader?: string };
            if (status.leader && status.leader !== '0' && status.header?.member_id === status.leader) return m;
          } catch {
            // not answering: ask the next one
          }
        }
        if (Date.now() > deadline) throw new Error(`no etcd member reported itself leader within ${timeoutMs} ms`);
        await sleep(100);
      }
    },
    stop,
  };
}

/** Starts a real single-member etcd on free loopback ports with a temporary data dir and waits until it is healthy. */
export async function startEtcd(options: EtcdOptions = {}): Promise<EtcdServer> {
  const cluster = await startEtcdCluster({ ...options, members: 1 });
  const only = cluster.members[0]!;
  return {
    name: only.name,
    dir: cluster.dir,
    endpoint: only.endpoint,
    endpoints: cluster.endpoints,
    dataDir: only.dataDir,
    tls: cluster.tls,
    clientFiles: cluster.clientFiles,
    clientOptions: cluster.clientOptions,
    writeClientConfig: cluster.writeClientConfig,
    get pid() {
      return only.pid;
    },
    get running() {
      return only.running;
    },
    pause: (signal) => only.pause(signal),
    kill: () => only.kill(),
    resume: () => only.resume(),
    stop: () => cluster.stop(),
  };
}
