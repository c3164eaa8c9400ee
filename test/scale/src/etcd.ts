/**
 * The scale run's etcd: one member, or a 3-member cluster on loopback (scenario `etcdMembers`), behind the one shape
 * the harness uses. The fault at `etcdRestartAt` (scenario `etcdFault`) is either every member SIGKILLed and started
 * again with its data (`restart`), or only the leader's death and return (`leader-kill`: the cluster keeps quorum,
 * the clients move to the other members).
 */
import { startEtcd, startEtcdCluster, type EtcdOptions, type EtcdMember } from '@sluice/etcd-runner';

export interface ScaleEtcd {
  /** Every member's client URL; the first one also serves /metrics to the harness. */
  readonly endpoints: string[];
  readonly endpoint: string;
  /** The pid of the first member (its CPU is what the run samples as etcd's). */
  readonly pid: number | undefined;
  /** Starts the fault: SIGKILL (every member, or the leader). */
  pause(): Promise<void>;
  /** Ends it: the killed members start again on their data. */
  resume(): Promise<void>;
  stop(): Promise<void>;
  /** For the run's log and report: what the fault does. */
  readonly fault: string;
}

export async function startScaleEtcd(members: 1 | 3, fault: 'restart' | 'leader-kill', options: EtcdOptions): Promise<ScaleEtcd> {
  if (members === 1) {
    if (fault !== 'restart') throw new Error('etcdFault leader-kill needs etcdMembers 3');
    const etcd = await startEtcd(options);
    return {
      endpoints: etcd.endpoints,
      endpoint: etcd.endpoint,
      get pid() {
        return etcd.pid;
      },
      pause: () => etcd.pause('SIGKILL'),
      resume: () => etcd.resume(),
      stop: () => etcd.stop(),
      fault: 'etcd SIGKILLed (data kept), then started again',
    };
  }
  const cluster = await startEtcdCluster({ ...options, members });
  let killed: EtcdMember[] = [];
  return {
    endpoints: cluster.endpoints,
    endpoint: cluster.endpoints[0]!,
    get pid() {
      return cluster.members[0]!.pid;
    },
    async pause() {
      killed = fault === 'leader-kill' ? [await cluster.leader()] : [...cluster.members];
      await Promise.all(killed.map((m) => m.kill()));
    },
    async resume() {
      await Promise.all(killed.map((m) => m.resume()));
      killed = [];
    },
    stop: () => cluster.stop(),
    fault: fault === 'leader-kill' ? `the leader of ${members} etcd members SIGKILLed, then started again` : `all ${members} etcd members SIGKILLed (data kept), then started again`,
  };
}
