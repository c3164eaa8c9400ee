/**
 * `npm start`: brings up a Sluice cluster on this machine and tears it down on Ctrl-C (or SIGTERM). It writes where
 * everything is to .sluice/demo.json, which the `sluice` CLI reads to find the demo.
 */
import { join, relative } from 'node:path';
import { Command, flag, parseOptions, schemas, z } from '@sluice/config';
import { gatherStatus, renderStatus, resolveTarget } from '@sluice/cli';
import { DemoRunningError, REPO_ROOT, startDemo, type Demo } from './demo.ts';
import { Progress } from './progress.ts';

const program = new Command('sluice-demo')
  .description('Start a demo Sluice cluster on this machine (Ctrl-C stops it and removes everything it made)')
  .addOption(flag('--demo-dir <dir>', 'where the demo writes demo.json, its kubeconfig, the components\' etcd.config files and logs', join(REPO_ROOT, '.sluice')))
  .addOption(flag('--nodes <n>', 'lab nodes: network namespaces with a real agent and eBPF datapath (0: none)', '3'))
  .addOption(flag('--pods-per-node <n>', 'pods per lab node, each running a small web server', '2'))
  .addOption(flag('--sim-nodes <n>', 'extra nodes simulated by kube-sim (no agent, no datapath)', '0'))
  .addOption(flag('--sim-pods-per-node <n>', 'pods per simulated node', '5'))
  .addOption(flag('--no-health', 'do not start the health service'))
  .addOption(flag('--masquerade <mode>', 'the agents\' masquerading, cluster-wide (sluice-agent-config): off, iptables (netfilter; host routing falls back to legacy) or bpf; default the manifests\' (off)'))
  .addOption(flag('--part-timeout <duration>', 'how long each part may take to come up', '90s'));
const options = parseOptions(
  program,
  z.object({
    demoDir: z.string().min(1),
    nodes: z.coerce.number().int().min(0).max(8),
    podsPerNode: z.coerce.number().int().min(0).max(16),
    simNodes: schemas.nonNegativeInt,
    simPodsPerNode: schemas.nonNegativeInt,
    health: z.boolean(),
    masquerade: z.enum(['off', 'iptables', 'bpf']).optional(),
    partTimeout: schemas.duration.pipe(z.number().min(1000, 'must be at least 1s')),
  }),
);

const out = (text: string) => process.stdout.write(text);
let demo: Demo | undefined;
let stopping = false;

async function shutdown(code: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  out('\nStopping the demo…\n');
  try {
    await demo?.stop();
    out('Stopped; nothing left behind.\n');
  } catch (err) {
    process.stderr.write(`sluice-demo: ${(err as Error).message}\n`);
    code = code || 1;
  }
  process.exit(code);
}
process.on('SIGINT', () => void shutdown(0));
process.on('SIGTERM', () => void shutdown(0));
// A closed terminal is a stop too: nothing may outlive the demo's session.
process.on('SIGHUP', () => void shutdown(0));

function nextSteps(d: Demo): string {
  const s = d.state;
  const cli = 'npm run -s sluice --';
  const firstNode = s.nodes[0]?.name;
  const lines = [
    '',
    `The demo is ready. Where everything is (also in ${relative(process.cwd(), d.statePath) || d.statePath}):`,
    `  etcd:            ${s.etcd?.endpoints.join(',')}`,
    ...(s.kubernetes ? [`  Kubernetes API:  ${s.kubernetes.server}   kubeconfig ${s.kubernetes.kubeconfig}`, `  kube-sim stats:  ${s.kubernetes.statsUrl ?? '-'}`] : []),
    ...(s.operator ? [`  operator:        ${s.operator.metricsUrl}   status ${s.operator.statusUrl}`] : []),
    ...(s.health ? [`  health (gRPC):   ${s.health.address}   metrics ${s.health.statusUrl?.replace(/\/status$/, '/metrics') ?? '-'}`] : []),
    ...s.nodes.map((n) => `  node ${n.name}:   ${n.nodeIP}  netns ${n.netns}  pins ${n.pinDir}${n.agentStatusUrl ? `  agent ${n.agentStatusUrl}` : ''}`),
    ...(s.labError ? [`  lab:             not started: ${s.labError}`] : []),
    '',
    'Try:',
    `  kubectl --kubeconfig ${s.kubernetes?.kubeconfig ?? '<kubeconfig>'} get nodes -o wide`,
    `  ${cli} status`,
    `  ${cli} health status`,
    `  ${cli} nodes`,
    `  ${cli} endpoints`,
    ...(s.pods.length ? [`  ${cli} connectivity test`] : []),
    ...(firstNode ? [`  ${cli} bpf endpoints --node ${firstNode}`, `  ${cli} bpf ipcache --node ${firstNode}`] : []),
    `  ETCDCTL_API=3 etcdctl --endpoints ${s.etcd?.endpoints[0]} get --prefix sluice/v1/nodes/ --keys-only`,
    '',
    'Press Ctrl-C to stop it; everything it made goes with it.',
    '',
  ];
  return lines.join('\n');
}

try {
  out('Starting the Sluice demo cluster\n');
  demo = await startDemo(
    {
      stateDir: options.demoDir,
      nodes: options.nodes,
      podsPerNode: options.podsPerNode,
      simNodes: options.simNodes,
      simPodsPerNode: options.simPodsPerNode,
      health: options.health,
      partTimeoutMs: options.partTimeout,
      ...(options.masquerade ? { masquerade: options.masquerade } : {}),
    },
    new Progress(out),
  );
  if (!stopping) {
    out('\n$ sluice status\n');
    try {
      const target = await resolveTarget({ etcdPrefix: 'sluice/', demoState: demo.statePath });
      out(renderStatus(await gatherStatus(target)));
    } catch (err) {
      out(`(sluice status failed: ${(err as Error).message})\n`);
    }
    out(nextSteps(demo));
  }
} catch (err) {
  if (err instanceof DemoRunningError) {
    process.stderr.write(`sluice-demo: ${err.message}\n`);
    process.exit(1);
  }
  process.stderr.write(`sluice-demo: failed to start: ${(err as Error).message}\n`);
  await shutdown(1);
}
