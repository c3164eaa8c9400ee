import { startEtcd } from '@sluice/etcd-runner';
import { startKubeSim } from '@sluice/kube-sim';
import { startLab } from '@sluice/lab';
const etcd = await startEtcd();
const sim = await startKubeSim({ nodes: 0, services: 0 });
for (const routing of ['native'] as const) {
  let lab;
  const t0 = Date.now();
  try {
    lab = await startLab({ nodes: 3, podsPerNode: 3, hostRouting: 'bpf', etcdEndpoint: etcd.endpoint, kubeSim: sim, routing, rootPrefix: `${routing}/`, nodePrefix: `${routing}-node-`, podPrefix: `${routing}-web-` });
    console.log(routing, 'ok', Date.now() - t0);
  } catch (e) { console.error('FAILED', routing, (e as Error).message); }
  finally { await lab?.stop(); }
}
await sim.close();
await etcd.stop();
