/**
 * Child process: kube-sim in its own process (own heap cap, own CPU and memory figures), driven by the harness over
 * the IPC channel. It stamps every pod creation and deletion with the time it happened in the API server, which is
 * where the propagation latency starts.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { startKubeSim, type KubeSim } from '@sluice/kube-sim';
import { createLogger } from '@sluice/log';
import type { HostCommand, HostMessage, PodChange, SliceChange } from './ipc.ts';

const byResource = (watchers: Array<{ resource: string; bytes: number }>) => {
  const out: Record<string, number> = {};
  for (const w of watchers) out[w.resource] = (out[w.resource] ?? 0) + w.bytes;
  return out;
};
const send = (message: HostMessage) => process.send?.(message);
let sim: KubeSim | undefined;
let recording = false;
let pending: PodChange[] = [];
let pendingSlices: SliceChange[] = [];

const flushTimer = setInterval(() => {
  if (pending.length === 0 && pendingSlices.length === 0) return;
  send({ type: 'changes', changes: pending, slices: pendingSlices });
  pending = [];
  pendingSlices = [];
}, 200);

// The API server's own event-loop delay, sent every 2 s: a stall here delays every watcher at once.
const loop = monitorEventLoopDelay({ resolution: 10 });
loop.enable();
const loopTimer = setInterval(() => {
  if (!sim) return;
  send({ type: 'eventLoop', maxMs: loop.max / 1e6, p99Ms: loop.percentile(99) / 1e6 });
  loop.reset();
}, 2000);

function onCommand(command: HostCommand): void {
  if (!sim) return;
  switch (command.type) {
    case 'record':
      recording = command.on;
      break;
    case 'churn':
      if (command.perSecond > 0) sim.cluster.startChurn(command.perSecond);
      else sim.cluster.stopChurn();
      break;
    case 'burst': {
      const names = sim.store.objectsIn('nodes').map((n) => n.name);
      const started = Date.now();
      const keys: string[] = [];
      const cluster = sim.cluster;
      // 100 pods a turn: created in one synchronous loop, 2,000 pods were a 100–300 ms turn of kube-sim's own, which
      // the report then counted against it as a stall (each pod's latency runs from its own creation either way).
      const createSome = () => {
        for (let n = 0; n < 100 && keys.length < command.pods; n++) keys.push(cluster.createPod({ nodeName: names[Math.floor(Math.random() * names.length)]! }).key);
        if (keys.length < command.pods) setImmediate(createSome);
        else send({ type: 'burstDone', started, ended: Date.now(), pods: command.pods, keys });
      };
      createSome();
      break;
    }
    case 'sliceChurn':
      // A random running pod's Ready condition flips, as a failing or recovering readiness probe does: one
      // EndpointSlice change and no pod record change.
      sim.cluster.startReadinessFlips(command.perSecond);
      break;
    case 'stats': {
      const s = sim.stats();
      send({
        type: 'stats', id: command.id,
        stats: {
          bytesWritten: s.bytesWritten, watchBytesSent: s.watchBytesSent, watchEventsSent: s.watchEventsSent, heartbeats: s.heartbeats,
          podsCreated: s.podsCreated, podsDeleted: s.podsDeleted, watchers: s.watchers.length, watchBytesByResource: byResource(s.watchers), objects: s.objects, heapUsed: s.memory.heapUsed,
        },
      });
      break;
    }
    case 'stop':
      void sim.close().then(() => process.exit(0));
      break;
  }
}

process.on('message', (raw) => {
  const command = raw as HostCommand;
  if (command.type === 'start') {
    const log = createLogger({ component: 'kube-sim', level: 'warn' });
    void startKubeSim({ ...command.options, log, port: 0 }).then((started) => {
      sim = started;
      started.store.onChange((resource, event) => {
        if (!recording) return;
        if (resource.plural === 'endpointslices') {
          pendingSlices.push([event.object.key, event.type === 'DELETED' ? 'X' : 'S', Date.now()]);
          return;
        }
        if (resource.plural !== 'pods') return;
        // A pod is an endpoint (the operator writes it) from the moment it has an IP: created Running with one, or
        // Pending → Running when its start delay is over. One deleted before it ran was never an endpoint.
        const hasIP = !!event.object.fields['status.podIP'];
        if (event.type === 'DELETED') {
          if (hasIP) pending.push([event.object.key, 'D', Date.now()]);
        } else if (hasIP && (event.type === 'ADDED' || !event.previous?.fields['status.podIP'])) {
          pending.push([event.object.key, 'A', Date.now()]);
        }
      });
      send({ type: 'ready', url: started.url, nodes: started.store.objectsIn('nodes').map((n) => n.name) });
    }, (err: unknown) => {
      process.stderr.write(`kube-sim host: ${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    });
    return;
  }
  onCommand(command);
});
/** The harness went (disconnect) or stops this process (SIGTERM). */
function shutdown(): void {
  clearInterval(flushTimer);
  sim?.cluster.stopReadinessFlips();
  clearInterval(loopTimer);
  // close() also removes the folder kube-sim made for its kubeconfig; a close that hangs does not keep the process.
  const closing = sim ? sim.close() : Promise.resolve();
  void Promise.race([closing, new Promise((resolve) => setTimeout(resolve, 2_000))]).finally(() => process.exit(0));
}
process.on('disconnect', shutdown);
process.on('SIGTERM', shutdown);
