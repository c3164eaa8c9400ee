import { realisticNode, realisticPod } from '@sluice/kube-objects';
import { encodeSlim, slimNode, slimPod } from '../src/index.ts';
import type { Figure } from '../../../bench/run.ts';

/** How much smaller a slim record is than the full object, and how fast the conversion runs. */
export default async function slimBench(): Promise<Figure[]> {
  const nodes = Array.from({ length: 2000 }, (_, i) =>
    realisticNode({ name: `node-${i}`, internalIP: `10.${(i >> 8) & 255}.${i & 255}.1`, podCIDR: `10.${128 + ((i >> 8) & 127)}.${i & 255}.0/24` }),
  );
  const fullBytes = nodes.reduce((sum, n) => sum + JSON.stringify(n).length, 0);
  const start = performance.now();
  let slimBytes = 0;
  for (const node of nodes) slimBytes += encodeSlim('node', slimNode(node)).length;
  const nodeSeconds = (performance.now() - start) / 1000;

  const pods = Array.from({ length: 20_000 }, (_, i) =>
    realisticPod({ namespace: 'default', name: `web-${i}`, nodeName: 'node-1', hostIP: '10.0.0.1', podIP: `10.244.${(i >> 8) & 255}.${i & 255}` }),
  );
  const podFull = pods.reduce((sum, p) => sum + JSON.stringify(p).length, 0);
  const podStart = performance.now();
  let podSlim = 0;
  for (const pod of pods) podSlim += encodeSlim('pod', slimPod(pod)).length;
  const podSeconds = (performance.now() - podStart) / 1000;

  return [
    { metric: 'node full JSON size (mean)', value: Math.round(fullBytes / nodes.length), unit: 'bytes' },
    { metric: 'node slim encoding size (mean)', value: Math.round(slimBytes / nodes.length), unit: 'bytes' },
    { metric: 'node slim/full size ratio', value: (slimBytes / fullBytes) * 100, unit: '%' },
    { metric: 'node slim+encode rate', value: Math.round(nodes.length / nodeSeconds), unit: 'nodes/s' },
    { metric: 'pod full JSON size (mean)', value: Math.round(podFull / pods.length), unit: 'bytes' },
    { metric: 'pod slim encoding size (mean)', value: Math.round(podSlim / pods.length), unit: 'bytes' },
    { metric: 'pod slim/full size ratio', value: (podSlim / podFull) * 100, unit: '%' },
    { metric: 'pod slim+encode rate', value: Math.round(pods.length / podSeconds), unit: 'pods/s' },
  ];
}
