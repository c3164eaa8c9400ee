/**
 * Child process for the operator's memory bench: kube-sim in a process of its own (so that the operator's process
 * holds only the operator), started from the options in argv[2] (JSON), driven over the IPC channel: pod churn
 * (creates plus deletes per second) and EndpointSlice churn (readiness flips of random running pods per second, each
 * one an EndpointSlice change and no pod record change, as the scale harness makes them).
 */
import { startKubeSim, type KubeSimOptions } from '@sluice/kube-sim';
import { createLogger } from '@sluice/log';

export type KubeSimChildCommand = { type: 'churn'; perSecond: number } | { type: 'sliceChurn'; perSecond: number } | { type: 'stop' };
export type KubeSimChildMessage = { type: 'ready'; url: string };

const options = JSON.parse(process.argv[2] ?? '{}') as Omit<KubeSimOptions, 'log'>;
const sim = await startKubeSim({ ...options, log: createLogger({ component: 'kube-sim', level: 'warn' }), port: 0 });

let flipTimer: NodeJS.Timeout | undefined;
function startSliceChurn(perSecond: number): void {
  clearInterval(flipTimer);
  flipTimer = undefined;
  if (perSecond <= 0) return;
  let carry = 0;
  let last = Date.now();
  flipTimer = setInterval(() => {
    const now = Date.now();
    carry += ((now - last) / 1000) * perSecond;
    last = now;
    // Pods come and go with the churn: pick among those there now.
    const pods = carry >= 1 ? sim.store.objectsIn('pods') : [];
    for (; carry >= 1 && pods.length > 0; carry--) {
      const pod = pods[Math.floor(Math.random() * pods.length)]!;
      if (!pod.fields['status.podIP']) continue;
      const [namespace, name] = pod.key.split('/') as [string, string];
      sim.store.mutate('pods', namespace, name, (obj) => {
        const conditions = (obj.status as { conditions?: Array<{ type: string; status: string }> } | undefined)?.conditions ?? [];
        const ready = conditions.find((c) => c.type === 'Ready');
        if (ready) ready.status = ready.status === 'True' ? 'False' : 'True';
      });
    }
  }, 100);
}

process.on('message', (raw) => {
  const command = raw as KubeSimChildCommand;
  if (command.type === 'churn') {
    if (command.perSecond > 0) sim.cluster.startChurn(command.perSecond);
    else sim.cluster.stopChurn();
  } else if (command.type === 'sliceChurn') startSliceChurn(command.perSecond);
  else if (command.type === 'stop') void sim.close().then(() => process.exit(0));
});
process.on('disconnect', () => process.exit(0));
process.send?.({ type: 'ready', url: sim.url } satisfies KubeSimChildMessage);
