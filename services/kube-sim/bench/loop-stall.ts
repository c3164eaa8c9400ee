/**
 * kube-sim's event loop under the scale harness's load, standalone: the same options and the same extra load as
 * test/scale/src/kube-sim-host.ts (5,000 nodes × 20 pods, 20,000 services, heartbeats every 10 s, 20 pod changes/s,
 * 10 readiness flips/s, a burst of 2,000 pods), an operator-like client in a child process (paginated lists of
 * nodes, pods, services and EndpointSlices, then watches of each), and every 2 s one line with the event loop's
 * worst delay, heap, RSS and CPU. Run it with --trace-gc to put the collector's pauses beside the stalls:
 *
 *   node --max-old-space-size=1536 --heap-growing-percent=100 --trace-gc --import tsx services/kube-sim/bench/loop-stall.ts > /tmp/gc.log 2> /tmp/loop.log
 *
 * Lines on stderr: `W <t ms> max=<ms> p99=<ms> heap=<MiB> rss=<MiB> ext=<MiB> cpu=<% of a core> load=<1-min>`, t on
 * the clock --trace-gc prints (ms since the process started). Environment: NODES, PODS_PER_NODE, SERVICES,
 * HEARTBEAT_ONLY_S (25), MEASURE_S (180), BURST_AT_S (90), BURST_PODS (2000), CHURN (20), FLIPS (10), POD_START_DELAY_MS (1000).
 *
 * What it found (2 shared cores, others' runs beside it; 102 two-second windows of heartbeats and measured phase):
 * with every object kept as a JS string, the heap grew ~12 MB/s (a new 12 KB Node string per heartbeat, promoted
 * since it lives 10 s) to ~1.1 GB and a mark-compact took it back to ~670 MB every ~31 s; scavenges copying those
 * strings averaged 6–11 ms (up to 220 ms). At load ~3.7: 4 windows over 200 ms, max 1,490 ms (a mark-compact with
 * marking steps up to 550 ms), and 2,926 ms in the first window after start (5,000 overdue heartbeats in one tick,
 * the first lists); at load ~1.1: 1 window over 200 ms (276 ms), 732 ms after start. Heap 877 MB on average, RSS up to 1,400 MiB,
 * 14–18 % of a core. With the objects' bytes in Buffers (external: never marked or moved), heartbeats spliced into a
 * byte template, the event line shared with watchers and timer batches cut at 20 ms: at load ~1.4 no window over
 * 200 ms (max 113 ms, 78 ms after start), at load ~3.5 2 (max 448 ms, beside mark-compacts' incremental steps); heap
 * 212 MB, RSS up to 865–889 MiB. V8 then kept the old-generation limit ~35 MB above the live heap, so incremental
 * marking restarted as soon as a mark-compact ended (one every ~3.6 s, 7.4 s of main-thread GC over 190 s, 15 % of
 * a core); --heap-growing-percent=100 leaves them to external memory (one every ~10.5 s, 3.5 s of GC, 9.6 % of a
 * core, heap unchanged), hence the flag in `npm start`. The burst itself (2,000 synchronous creates, as the harness
 * sends it) is one turn of 100–300 ms either way.
 */
import { fork } from 'node:child_process';
import { loadavg } from 'node:os';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { createLogger } from '@sluice/log';
import { startKubeSim } from '../src/index.ts';

const num = (name: string, fallback: number) => Number(process.env[name] ?? fallback);
const NODES = num('NODES', 5000);
const PODS_PER_NODE = num('PODS_PER_NODE', 20);
const SERVICES = num('SERVICES', 20_000);
const HEARTBEAT_ONLY_MS = num('HEARTBEAT_ONLY_S', 25) * 1000;
const MEASURE_MS = num('MEASURE_S', 180) * 1000;
const BURST_AT_MS = num('BURST_AT_S', 90) * 1000;
const BURST_PODS = num('BURST_PODS', 2000);
const CHURN = num('CHURN', 20);
const FLIPS = num('FLIPS', 10);

const log = (line: string) => process.stderr.write(`${line}\n`);
const t = () => performance.now().toFixed(0);
const mib = (b: number) => (b / 1048576).toFixed(0);

interface Window { max: number; p99: number; heap: number; rss: number }
const windows: { phase: string; w: Window }[] = [];
let phase = 'populate';
const loop = monitorEventLoopDelay({ resolution: 10 });
loop.enable();
let cpuLast = process.cpuUsage();
let wallLast = performance.now();
const windowTimer = setInterval(() => {
  const cpu = process.cpuUsage(cpuLast);
  const now = performance.now();
  const m = process.memoryUsage();
  const w = { max: loop.max / 1e6, p99: loop.percentile(99) / 1e6, heap: m.heapUsed, rss: m.rss };
  windows.push({ phase, w });
  log(`W ${t()} ${phase} max=${w.max.toFixed(0)} p99=${w.p99.toFixed(0)} heap=${mib(m.heapUsed)} rss=${mib(m.rss)} ext=${mib(m.external + m.arrayBuffers)} cpu=${(((cpu.user + cpu.system) / 1000 / (now - wallLast)) * 100).toFixed(0)} load=${loadavg()[0]!.toFixed(2)}`);
  loop.reset();
  cpuLast = process.cpuUsage();
  wallLast = now;
}, 2000);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const started = performance.now();
const sim = await startKubeSim({
  nodes: NODES, podsPerNode: PODS_PER_NODE, services: SERVICES, namespaces: 10, heartbeatIntervalMs: 10_000, heartbeatJitter: 0.1,
  churnPerSecond: 0, seed: 1, heartbeats: true, podStartDelayMs: num('POD_START_DELAY_MS', 1000), port: 0,
  log: createLogger({ component: 'kube-sim', level: 'warn' }),
});
log(`READY ${t()} populate=${((performance.now() - started) / 1000).toFixed(1)} s objects=${JSON.stringify(sim.stats().objects)}`);

phase = 'sync';
const client = fork(fileURLToPath(new URL('./watch-client.ts', import.meta.url)), [sim.url], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
await new Promise<void>((resolve, reject) => {
  client.once('message', () => resolve());
  client.once('exit', (code) => reject(new Error(`watch client exited with ${code}`)));
});
log(`SYNCED ${t()}`);

phase = 'heartbeats';
await sleep(HEARTBEAT_ONLY_MS);

phase = 'measured';
sim.cluster.startChurn(CHURN);
// The harness's readiness flips (kube-sim-host's sliceChurn command).
sim.cluster.startReadinessFlips(FLIPS);
const measuredAt = performance.now();
await sleep(BURST_AT_MS);
// The harness's burst (kube-sim-host's 'burst' command): every pod created in one turn.
const names = sim.store.objectsIn('nodes').map((n) => n.name);
const burstStart = performance.now();
for (let i = 0; i < BURST_PODS; i++) sim.cluster.createPod({ nodeName: names[Math.floor(Math.random() * names.length)]! });
log(`BURST ${t()} ${BURST_PODS} pods created in ${(performance.now() - burstStart).toFixed(0)} ms`);
await sleep(Math.max(0, MEASURE_MS - (performance.now() - measuredAt)));

sim.cluster.stopReadinessFlips();
clearInterval(windowTimer);
const measured = windows.filter((x) => x.phase === 'heartbeats' || x.phase === 'measured');
const max = Math.max(...measured.map((x) => x.w.max));
const over = measured.filter((x) => x.w.max > 200).length;
const heap = measured.map((x) => x.w.heap);
const rss = measured.map((x) => x.w.rss);
const s = sim.stats();
log(`SUMMARY windows=${measured.length} over200=${over} max=${max.toFixed(0)} ms heapAvg=${mib(heap.reduce((a, b) => a + b, 0) / heap.length)} heapMax=${mib(Math.max(...heap))} rssMax=${mib(Math.max(...rss))} MiB ` +
  `heartbeats=${s.heartbeats} watchEvents=${s.watchEventsSent} dropped=${s.droppedWatchers} pods=${s.objects.pods}`);
client.kill('SIGTERM');
await sim.close();
process.exit(0);
