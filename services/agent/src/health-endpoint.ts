/**
 * The node's health endpoint, owned by the agent (like cilium-health-ep): a small network namespace with an address
 * of the node's podCIDR, wired to the node like a pod, answering GET /hello on its health port. Peers probe it over
 * ICMP and HTTP, so a path that reaches the node's stack but not its pods (the datapath, the routes to the podCIDR)
 * shows as an endpoint failure.
 *
 * It is made the way a pod is: the CNI plugin's ADD (in-process, the same code the runtime runs) against this
 * agent's own local API, marked SLUICE_HEALTH=true so that the endpoint is published as the node's health IP, not as
 * a pod. Like a pod it outlives the agent: a restarted agent adopts the endpoint it finds intact (its namespace holds
 * the address the agent's endpoint store has for it), so that a restart rewrites nothing in the maps; one it finds
 * half made is taken apart (CNI DEL, which also frees the address, then the namespace) and made again. The agent's
 * stop ends only the endpoint's listener.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { runCni } from '@sluice/cni';
import { RepeatSuppressor, type Logger } from '@sluice/log';
import { startHealthListener } from './health-listener.ts';

const exec = promisify(execFile);

export interface HealthEndpointOptions {
  node: string;
  /** The name under /run/netns of the endpoint's namespace. */
  netns: string;
  /** The health port inside it. */
  port: number;
  /** The node's namespace (the lab's nodes are namespaces); undefined: the agent's own. */
  nodeNetns?: string;
  /** The agent's local API, as the CNI plugin reaches it. */
  apiSocket?: string;
  apiPort?: number;
  /** The agent's state directory; the address comes from the host-local IPAM kept under <stateDir>/ipam. */
  stateDir: string;
  /** The address the agent's endpoint store holds for its health endpoint, if any (restored from its state file). */
  existing?: () => string | undefined;
  log: Logger;
}

export interface HealthEndpoint {
  readonly netns: string;
  readonly ip: string;
  readonly port: number;
  /** Ends the listener; the endpoint stays for the next agent. */
  stop(): Promise<void>;
}

const CONTAINER_ID = (node: string) => `sluice-health-${node}`.replace(/[^A-Za-z0-9_.-]/g, '-');

export async function startHealthEndpoint(options: HealthEndpointOptions): Promise<HealthEndpoint> {
  const config = JSON.stringify({
    cniVersion: '1.0.0',
    name: 'sluice',
    type: 'sluice-cni',
    ...(options.apiPort ? { agentUrl: `http://127.0.0.1:${options.apiPort}` } : { agentSocket: options.apiSocket }),
    ...(options.nodeNetns ? { nodeNetns: options.nodeNetns } : {}),
    ipam: { dataDir: join(options.stateDir, 'ipam') },
  });
  const netnsPath = `/run/netns/${options.netns}`;
  const cni = (command: 'ADD' | 'DEL') =>
    runCni({
      CNI_COMMAND: command, CNI_CONTAINERID: CONTAINER_ID(options.node), CNI_NETNS: netnsPath, CNI_IFNAME: 'eth0',
      CNI_ARGS: 'K8S_POD_NAME=sluice-health;SLUICE_HEALTH=true', CNI_PATH: '/opt/cni/bin',
    }, config);
  const takeApart = async () => {
    const del = await cni('DEL');
    if (del.code !== 0) options.log.warn({ netns: options.netns, result: del.stdout }, 'health endpoint: CNI DEL failed');
    if (existsSync(netnsPath)) await exec('ip', ['netns', 'delete', options.netns]).catch(() => undefined);
  };

  const serve = async (ip: string, adopted: boolean): Promise<HealthEndpoint> => {
    const listener = await startHealthListener(options.netns, options.port, options.node, { probe: false });
    options.log.info({ netns: options.netns, ip, port: options.port, adopted }, 'health endpoint ready');
    return {
      netns: options.netns,
      ip,
      port: options.port,
      async stop() {
        listener.stop();
      },
    };
  };
  if (existsSync(netnsPath)) {
    const known = options.existing?.();
    const addresses = await exec('ip', ['-n', options.netns, '-4', '-o', 'addr', 'show', 'dev', 'eth0']).then((r) => r.stdout, () => '');
    if (known && addresses.includes(` ${known}/`)) return serve(known, true);
    options.log.info({ netns: options.netns }, 'health endpoint: taking apart the one a previous agent left half made');
    await takeApart();
  }
  await exec('ip', ['netns', 'add', options.netns]);
  try {
    await exec('ip', ['-n', options.netns, 'link', 'set', 'lo', 'up']);
    const added = await cni('ADD');
    if (added.code !== 0) throw new Error(`CNI ADD failed: ${added.stdout}`);
    const ip = (JSON.parse(added.stdout) as { ips?: Array<{ address: string }> }).ips?.[0]?.address.split('/')[0];
    if (!ip) throw new Error(`CNI ADD returned no address: ${added.stdout}`);
    return await serve(ip, false);
  } catch (err) {
    await takeApart();
    throw err;
  }
}

export interface HealthEndpointOwner {
  /** The endpoint once made. */
  readonly current: HealthEndpoint | undefined;
  stop(): Promise<void>;
}

/**
 * Makes the endpoint once `after` settles (the agent's first sync: the CNI plugin needs this node's podCIDR, which
 * the agent learns from its node record) and keeps trying with backoff (2 s doubling to 30 s, logged once per
 * minute) until it is made or the agent stops; `onReady` gets it.
 */
export function ownHealthEndpoint(options: HealthEndpointOptions & { after: Promise<unknown>; onReady: (endpoint: HealthEndpoint) => void }): HealthEndpointOwner {
  let current: HealthEndpoint | undefined;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let attempt: Promise<void> | undefined;
  const failures = new RepeatSuppressor(60_000);
  const tryOnce = async (delayMs: number): Promise<void> => {
    if (stopped) return;
    try {
      const endpoint = await startHealthEndpoint(options);
      if (stopped) return void (await endpoint.stop());
      current = endpoint;
      options.onReady(endpoint);
    } catch (err) {
      failures.warn(options.log, 'make', { error: (err as Error).message, retryInMs: delayMs }, 'the health endpoint could not be made; retrying');
      if (!stopped) timer = setTimeout(() => void (attempt = tryOnce(Math.min(delayMs * 2, 30_000))), delayMs);
    }
  };
  void options.after.then(() => void (attempt = tryOnce(2000)), () => undefined);
  return {
    get current() {
      return current;
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await attempt?.catch(() => undefined);
      await current?.stop();
      current = undefined;
    },
  };
}
