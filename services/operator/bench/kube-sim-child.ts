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

process.on('message', (raw) => {
  const command = raw as KubeSimChildCommand;
  if (command.type === 'churn') {
    if (command.perSecond > 0) sim.cluster.startChurn(command.perSecond);
    else sim.cluster.stopChurn();
  } else if (command.type === 'sliceChurn') sim.cluster.startReadinessFlips(command.perSecond);
  else if (command.type === 'stop') void sim.close().then(() => process.exit(0));
});
// close() also removes the folder kube-sim made for its kubeconfig; a close that hangs does not keep the process.
const shutdown = () => void Promise.race([sim.close(), new Promise((resolve) => setTimeout(resolve, 2_000))]).finally(() => process.exit(0));
process.on('disconnect', shutdown);
process.on('SIGTERM', shutdown);
process.send?.({ type: 'ready', url: sim.url } satisfies KubeSimChildMessage);
