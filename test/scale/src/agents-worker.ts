/**
 * Child process: simulated agents. Full-state agents are the real AgentCore (watchers, caches, reconcile) against
 * memoryDatapath(), all on one shared etcd client (one gRPC watch stream, as one agent process would have);
 * lightweight watchers count what each other node would receive, spread over `lightClients` etcd clients (each its
 * own HTTP/2 connection and watch stream). Started with --expose-gc so that memory samples are taken after a GC.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { readFileSync } from 'node:fs';
import { AgentCore, startServices, type Services } from '@sluice/agent';
import { memoryDatapath } from '@sluice/datapath';
import { createKvClient, keySchema, watchPrefix, type Etcd3 } from '@sluice/kvstore';
import { createLogger } from '@sluice/log';
import type { WorkerCommand, WorkerInit, WorkerMessage, WorkerSample } from './ipc.ts';
import { LightWatcher, newLightCounters, type LightEpisode } from './light-watcher.ts';

const send = (message: WorkerMessage) => process.send?.(message);
const log = createLogger({ component: 'scale-agents', level: 'warn' });

const agents: AgentCore[] = [];
/** The services reconciler of the first `serviceAgents` full agents (same datapath as their AgentCore). */
const services: Array<Services | undefined> = [];
let svcProgrammed: Array<[number, number, number]> = [];
let sliceEvents: Array<[string, 'P' | 'D', number, number]> = [];
const lights: LightWatcher[] = [];
const clients: Etcd3[] = [];
const counters = newLightCounters();
let back: LightEpisode[] = [];
let programmed: Array<[number, number, number]> = [];
let etcdEvents: Array<[string, 'P' | 'D', number, number]> = [];
let retries: Array<[number, 'full' | 'light']> = [];
const lastRetries: number[] = [];
const lastErrors: Array<string | undefined> = [];
const errors: Record<string, number> = {};

const flushTimer = setInterval(() => {
  if (programmed.length) send({ type: 'programmed', items: programmed });
  if (etcdEvents.length) send({ type: 'etcdEvents', items: etcdEvents });
  programmed = [];
  etcdEvents = [];
  if (svcProgrammed.length) send({ type: 'svcProgrammed', items: svcProgrammed });
  if (sliceEvents.length) send({ type: 'sliceEvents', items: sliceEvents });
  svcProgrammed = [];
  sliceEvents = [];
  // Full agents' watch retries, seen by polling their status (the library counts a retry when a stream is lost).
  agents.forEach((agent, i) => {
    const st = agent.status().etcd;
    if (st.retries > (lastRetries[i] ?? 0)) {
      for (let k = lastRetries[i] ?? 0; k < st.retries; k++) retries.push([Date.now(), 'full']);
      lastRetries[i] = st.retries;
    }
    if (st.lastError && st.lastError !== lastErrors[i]) {
      errors[st.lastError] = (errors[st.lastError] ?? 0) + 1;
      lastErrors[i] = st.lastError;
    }
  });
  if (retries.length) send({ type: 'retries', items: retries });
  retries = [];
  if (back.length) send({ type: 'back', items: back });
  back = [];
}, 100);

function rchar(): number {
  try {
    const m = /rchar:\s*(\d+)/.exec(readFileSync('/proc/self/io', 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

const loop = monitorEventLoopDelay({ resolution: 10 });
loop.enable();

function sample(gc: boolean): WorkerSample {
  // Before the GC asked for here, which would count as this process's stall.
  const eventLoopMaxMs = loop.max / 1e6;
  loop.reset();
  if (gc) (globalThis as { gc?: () => void }).gc?.();
  const mem = process.memoryUsage();
  const merged: Record<string, number> = { ...errors };
  for (const [k, v] of Object.entries(counters.errors)) merged[k] = (merged[k] ?? 0) + v;
  return {
    fullSynced: agents.filter((a, i) => a.isSynced && (services[i]?.status().synced ?? true)).length,
    fullConnected: agents.filter((a) => a.status().etcd.connected).length,
    lightConnected: lights.filter((l) => l.connected).length,
    lightEvents: counters.events,
    lightBytes: counters.bytes,
    fullRetries: agents.reduce((sum, a) => sum + a.status().etcd.retries, 0),
    lightRetries: counters.retries,
    lightLists: counters.lists,
    lightListKeys: counters.listKeys,
    lightListBytes: counters.listBytes,
    errors: merged,
    unretried: { ...counters.unretried },
    rchar: rchar(),
    heapUsed: mem.heapUsed,
    rss: mem.rss,
    eventLoopMaxMs,
    clusterEndpoints: agents.map((a) => a.status().endpoints.cluster),
    serviceTables: services.flatMap((s) => (s ? [{ services: s.table.counts.services, slices: s.table.counts.endpointSlices, programmed: s.programmer.size }] : [])),
  };
}

function init(msg: WorkerInit): void {
  (globalThis as { gc?: () => void }).gc?.();
  const before = process.memoryUsage();
  const baseline = { heapUsed: before.heapUsed, rss: before.rss };
  const keys = keySchema(msg.root);
  const podsPrefix = keys.prefix('pods');
  if (msg.full.length > 0 || msg.trackRevisions) clients.push(createKvClient({ endpoints: msg.etcd.split(',') }));
  const shared = clients[0];
  if (msg.trackRevisions && shared) {
    // The library's resumable watch (no values decoded): the etcd revision of every pod change, for matching.
    watchPrefix<null>(shared, podsPrefix, {
      name: 'scale-tracker', clusterSize: 1, log, decode: () => null,
      onEvent: (e) => {
        if (e.type === 'listDone' || e.modRevision <= msg.startRevision) return;
        etcdEvents.push([e.key.slice(podsPrefix.length), e.type === 'upsert' ? 'P' : 'D', e.modRevision, Date.now()]);
      },
    });
    // The same for EndpointSlices: each slice change's revision, for the services propagation.
    const slicesPrefix = keys.prefix('endpointslices');
    watchPrefix<null>(shared, slicesPrefix, {
      name: 'scale-slice-tracker', clusterSize: 1, log, decode: () => null,
      onEvent: (e) => {
        if (e.type === 'listDone' || e.modRevision <= msg.startRevision) return;
        sliceEvents.push([e.key.slice(slicesPrefix.length), e.type === 'upsert' ? 'P' : 'D', e.modRevision, Date.now()]);
      },
    });
  }
  msg.full.forEach((nodeName, i) => {
    const datapath = memoryDatapath();
    const agent = new AgentCore({
      nodeName, client: shared!, datapath, keys, clusterSize: msg.clusterSize, log,
      // Nobody edits these in-memory maps behind the agents' backs: a periodic full pass (drift repair, ~0.4 s at
      // 100,000 pods) would only add CPU to the figures.
      refreshIntervalMs: 0,
      onProgrammed: (p) => programmed.push([i, p.podsRevision, Date.now()]),
    });
    agent.start();
    if (i < msg.serviceAgents) {
      // What the agent runs beside its core (agent.ts): Services + EndpointSlices → the load balancer's maps.
      const svc = startServices({ nodeName, client: shared!, keys, datapath, log, clusterSize: msg.clusterSize, refreshIntervalMs: 0, gcIntervalMs: 0 });
      // Programmed up to R: every change of the table up to R is in the maps (no row below R pending or in error).
      let reported = 0;
      svc.reconciler.addPassListener(() => {
        if (svc.reconciler.status().fullPasses === 0) return;
        const low = svc.reconciler.lowestUndoneRevision();
        const rev = Math.min(svc.table.revision, low === Infinity ? Infinity : low - 1);
        if (rev > reported) {
          reported = rev;
          svcProgrammed.push([i, rev, Date.now()]);
        }
      });
      services[i] = svc;
    }
    void agent.synced().then(() => {
      if (agents.every((a) => a.isSynced)) send({ type: 'synced', at: Date.now() });
    });
    agents.push(agent);
  });
  const lightClients: Etcd3[] = [];
  for (let c = 0; c < Math.min(msg.lightClients, msg.light.length); c++) lightClients.push(createKvClient({ endpoints: msg.etcd.split(',') }));
  clients.push(...lightClients);
  msg.light.forEach((_node, i) => {
    const list = i < msg.lightListers ? msg.lightList : 'none';
    lights.push(new LightWatcher({
      client: lightClients[i % lightClients.length]!, prefixes: [keys.prefix('nodes'), podsPrefix], startRevision: msg.startRevision,
      clusterSize: msg.clusterSize, counters, list,
      onRetry: () => retries.push([Date.now(), 'light']), onBack: (e) => back.push(e),
    }).start());
  });
  if (msg.full.length === 0) send({ type: 'synced', at: Date.now() });
  send({ type: 'ready', baseline });
}

process.on('message', (raw) => {
  const command = raw as WorkerCommand;
  if (command.type === 'init') init(command);
  else if (command.type === 'sample') send({ type: 'sample', id: command.id, sample: sample(command.gc) });
  else if (command.type === 'stop') {
    clearInterval(flushTimer);
    for (const l of lights) l.stop();
    void Promise.all([...agents.map((a) => a.stop()), ...services.map((s) => s?.stop())]).finally(() => {
      for (const c of clients) c.close();
      process.exit(0);
    });
  }
});
process.on('disconnect', () => process.exit(0));
