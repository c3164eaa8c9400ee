/**
 * The scale harness's health phase alone: a real etcd holding n node records, the real health service, and the
 * simulated probers of health-sim.ts, with the phase's knobs; prints the findings and the result as JSON. The long
 * runs (10 minutes with 1 % loss) need none of the harness's other processes.
 *
 *   node --import tsx test/scale/src/health-phase-main.ts --nodes 5000 --duration 10m --loss 0.01 --pair next
 */
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { Command, flag, parseOptions, schemas, z } from '@sluice/config';
import { freePort, startEtcd } from '@sluice/etcd-runner';
import { createKvClient, keySchema, syncedMarkerValue } from '@sluice/kvstore';
import { encodeSlimString, SCHEMA_VERSION } from '@sluice/slim';
import { healthPhaseFindings, runHealthPhase } from './health-phase.ts';

const program = new Command('health-phase')
  .description('The scale harness\'s health phase on its own: n simulated probers against the real health service')
  .addOption(flag('--nodes <n>', 'simulated nodes', '5000'))
  .addOption(flag('--duration <duration>', 'length of the phase', '2m'))
  .addOption(flag('--loss <share>', 'share of probes lost at random', '0.01'))
  .addOption(flag('--pair <which>', 'the pair that breaks: next, random or none', 'next'));
const options = parseOptions(program, z.object({
  nodes: z.coerce.number().int().min(10),
  duration: schemas.duration.pipe(z.number().min(10_000)),
  loss: z.coerce.number().min(0).max(0.5),
  pair: z.enum(['next', 'random', 'none']),
}));

const names = Array.from({ length: options.nodes }, (_, i) => `node-${String(i).padStart(5, '0')}`);
const etcd = await startEtcd();
const logDir = mkdtempSync(join(tmpdir(), 'sluice-health-phase-'));
let service: ReturnType<typeof spawn> | undefined;
try {
  const kv = createKvClient({ endpoints: [etcd.endpoint] });
  const keys = keySchema();
  for (let from = 0; from < names.length; from += 64) {
    await Promise.all(names.slice(from, from + 64).map((name, j) => {
      const i = from + j;
      return kv.put(keys.node(name)).value(encodeSlimString('node', {
        v: SCHEMA_VERSION, name, labels: {}, addresses: [{ type: 'InternalIP', ip: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}` }], podCIDRs: [], ready: 'True', healthIPs: [],
      }));
    }));
  }
  // What the operator writes once its sweep of the node records ended: the service waits for it.
  await kv.put(keys.synced('nodes')).value(syncedMarkerValue('nodes'));
  kv.close();
  const port = await freePort();
  const statusPort = await freePort();
  service = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('../../../services/health/src/main.ts', import.meta.url)),
    '--listen', `127.0.0.1:${port}`, '--etcd-endpoints', etcd.endpoint, '--insecure', '--metrics-port', String(statusPort), '--log-level', 'warn'],
  { stdio: ['ignore', 'ignore', 'inherit'] });
  const readyBy = Date.now() + 60_000;
  while (!(await fetch(`http://127.0.0.1:${statusPort}/readyz`).then((r) => r.ok, () => false))) {
    if (Date.now() > readyBy) throw new Error('the health service did not get ready within 60 s');
    await sleep(250);
  }
  const result = await runHealthPhase({
    address: `127.0.0.1:${port}`, nodes: names, durationMs: options.duration, lossRate: options.loss, pair: options.pair,
    servicePid: service.pid, logFile: join(logDir, 'health-sim.log'),
  });
  if (!result) throw new Error(`the simulation printed no result (log: ${join(logDir, 'health-sim.log')})`);
  process.stdout.write(`detection of the dead node: ${result.detectionMs === null ? 'not detected' : `${(result.detectionMs / 1000).toFixed(2)} s`} (documented bound ${(result.documentedDetectionMs / 1000).toFixed(2)} s); probes per node per second ${result.probesPerNodePerSecondMean.toFixed(1)} mean, ${result.probesPerNodePerSecondMax.toFixed(1)} max\n`);
  process.stdout.write(`${healthPhaseFindings(result)}\n`);
  process.stdout.write(`${JSON.stringify(result)}\n`);
} finally {
  service?.kill('SIGTERM');
  await etcd.stop();
}
