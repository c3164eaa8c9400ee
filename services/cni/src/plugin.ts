/**
 * The CNI plugin's commands (spec 1.0). The plugin runs where the runtime runs it; the node it acts on is either its
 * own network namespace or, in the lab where every node is a namespace, `nodeNetns` from the config. Everything the
 * plugin changes in the node is addressed with `ip -n <node>` and in the pod with `nsenter --net=<CNI_NETNS>`.
 *
 * Network config (stdin):
 *   { "cniVersion": "1.0.0", "name": "sluice", "type": "sluice-cni",
 *     "agentSocket": "/var/run/sluice/<node>/agent.sock"   (or "agentUrl": "http://127.0.0.1:<port>"),
 *     "nodeNetns": "<node namespace>"                       (optional),
 *     "mtu": 1500                                           (optional: else the agent's, derived from the node's
 *                                                            uplink and routing mode; else the kernel's default),
 *     "ipam": { "dataDir": "/var/lib/sluice-cni/<node>", "subnet": "<podCIDR>" (optional: else the agent's) } }
 * CNI_ARGS: K8S_POD_NAMESPACE, K8S_POD_NAME; SLUICE_HEALTH=true marks the node's health endpoint; IP=<addr> asks
 * for a specific address.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { request } from 'node:http';
import { promisify } from 'node:util';
import { z } from 'zod';
import { HostLocalIpam } from './ipam.ts';

const exec = promisify(execFile);

export const SUPPORTED_VERSIONS = ['0.4.0', '1.0.0'];
export const GATEWAY = '169.254.1.1';

/** CNI error codes (spec 1.0, "Error"). */
export const CNI_ERR = {
  incompatibleVersion: 1,
  unsupportedField: 2,
  unknownContainer: 3,
  invalidEnv: 4,
  io: 5,
  decode: 6,
  invalidConfig: 7,
  tryAgainLater: 11,
  internal: 999,
} as const;

export class CniError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly details = '',
  ) {
    super(message);
  }
}

const configSchema = z.looseObject({
  cniVersion: z.string(),
  name: z.string().min(1),
  type: z.string().min(1),
  agentSocket: z.string().min(1).optional(),
  agentUrl: z.string().url().optional(),
  nodeNetns: z.string().regex(/^[A-Za-z0-9_.-]+$/).optional(),
  mtu: z.number().int().min(576).max(65535).optional(),
  ipam: z.looseObject({ dataDir: z.string().min(1).optional(), subnet: z.string().optional() }).optional(),
});
export type NetConfig = z.infer<typeof configSchema>;

export interface CniEnv {
  command: string;
  containerId: string;
  netns: string;
  ifname: string;
  args: Record<string, string>;
}

export function parseEnv(env: NodeJS.ProcessEnv): CniEnv {
  const command = env.CNI_COMMAND ?? '';
  if (!['ADD', 'DEL', 'CHECK', 'VERSION'].includes(command)) throw new CniError(CNI_ERR.invalidEnv, `CNI_COMMAND must be ADD, DEL, CHECK or VERSION, got ${JSON.stringify(command)}`);
  const args: Record<string, string> = {};
  for (const kv of (env.CNI_ARGS ?? '').split(';').filter(Boolean)) {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw new CniError(CNI_ERR.invalidEnv, `CNI_ARGS: ${JSON.stringify(kv)} is not KEY=VALUE`);
    args[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  const out: CniEnv = { command, containerId: env.CNI_CONTAINERID ?? '', netns: env.CNI_NETNS ?? '', ifname: env.CNI_IFNAME ?? '', args };
  if (command === 'VERSION') return out;
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(out.containerId)) throw new CniError(CNI_ERR.invalidEnv, 'CNI_CONTAINERID is missing or has characters other than alphanumerics, _, . and -');
  if (!out.ifname || out.ifname.length > 15 || /[/\s]/.test(out.ifname)) throw new CniError(CNI_ERR.invalidEnv, 'CNI_IFNAME is missing or not a valid interface name');
  if (command !== 'DEL' && !out.netns.startsWith('/')) throw new CniError(CNI_ERR.invalidEnv, 'CNI_NETNS must be the path of the pod\'s network namespace');
  return out;
}

export function parseConfig(text: string): NetConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new CniError(CNI_ERR.decode, 'network config on stdin is not JSON', (err as Error).message);
  }
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new CniError(CNI_ERR.invalidConfig, `invalid network config: field ${issue.path.join('.') || '(config)'} ${issue.message}`);
  }
  if (!SUPPORTED_VERSIONS.includes(parsed.data.cniVersion)) {
    throw new CniError(CNI_ERR.incompatibleVersion, `cniVersion ${parsed.data.cniVersion} is not supported`, `supported: ${SUPPORTED_VERSIONS.join(', ')}`);
  }
  if (!parsed.data.agentSocket && !parsed.data.agentUrl) throw new CniError(CNI_ERR.invalidConfig, 'invalid network config: agentSocket or agentUrl is required');
  return parsed.data;
}

/** The host-side veth name: stable per container, ≤ 15 chars. */
export function hostIfname(containerId: string, ifname: string): string {
  return `lxc${createHash('sha1').update(`${containerId}/${ifname}`).digest('hex').slice(0, 11)}`;
}

async function agentCall(config: NetConfig, method: string, path: string, body?: unknown): Promise<{ status: number; json: unknown }> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const target = config.agentUrl ? new URL(path, config.agentUrl) : undefined;
  return new Promise((resolve, reject) => {
    const req = request(
      {
        method,
        path,
        ...(target ? { host: target.hostname, port: target.port } : { socketPath: config.agentSocket }),
        headers: payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {},
        timeout: 15_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown = text;
          try {
            json = JSON.parse(text);
          } catch {
            // keep the text
          }
          resolve({ status: res.statusCode ?? 0, json });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('agent did not answer within 15 s')));
    req.on('error', (err) => reject(new CniError(CNI_ERR.tryAgainLater, `the Sluice agent is not reachable at ${config.agentUrl ?? config.agentSocket}`, err.message)));
    req.end(payload);
  });
}

/**
 * PUT /v1/endpoints/<id>. A 503 means the agent does not know this node's podCIDR yet (it starts before the operator
 * wrote the node record; each call waits ~10 s for it), so a few more calls cover a slow start; any other answer is
 * final.
 */
export async function registerEndpoint(config: NetConfig, endpoint: { id: string } & Record<string, unknown>, attempts = 6, baseDelayMs = 250): Promise<{ status: number; json: unknown }> {
  const path = `/v1/endpoints/${encodeURIComponent(endpoint.id)}`;
  let res = await agentCall(config, 'PUT', path, endpoint);
  for (let attempt = 1; res.status === 503 && attempt < attempts; attempt++) {
    await new Promise((r) => setTimeout(r, Math.min(4000, baseDelayMs * 2 ** attempt)));
    res = await agentCall(config, 'PUT', path, endpoint);
  }
  return res;
}

const agentNodeSchema = z.object({ name: z.string(), podCIDRs: z.array(z.string()), pinDir: z.string(), synced: z.boolean(), mtu: z.number().int().min(576).max(65535).optional() });

async function ipNode(config: NetConfig, args: string[]): Promise<string> {
  const { stdout } = await exec('ip', [...(config.nodeNetns ? ['-n', config.nodeNetns] : []), ...args], { timeout: 10_000 });
  return stdout;
}

async function ipPod(netns: string, args: string[]): Promise<string> {
  const { stdout } = await exec('nsenter', [`--net=${netns}`, '--', 'ip', ...args], { timeout: 10_000 });
  return stdout;
}

async function linkJson(out: Promise<string>): Promise<{ ifindex: number; address: string } | undefined> {
  try {
    return (JSON.parse(await out) as Array<{ ifindex: number; address: string }>)[0];
  } catch {
    return undefined;
  }
}

function ipamFor(config: NetConfig, subnet: string): HostLocalIpam {
  return new HostLocalIpam(config.ipam?.dataDir ?? `/var/lib/sluice-cni/${config.name}${config.nodeNetns ? `-${config.nodeNetns}` : ''}`, subnet);
}

async function nodeInfo(config: NetConfig): Promise<z.infer<typeof agentNodeSchema>> {
  const res = await agentCall(config, 'GET', '/v1/node');
  const parsed = agentNodeSchema.safeParse(res.json);
  if (res.status !== 200 || !parsed.success) throw new CniError(CNI_ERR.tryAgainLater, 'the Sluice agent did not describe its node', JSON.stringify(res.json));
  return parsed.data;
}

function subnetOf(config: NetConfig, node: { podCIDRs: string[] }): string {
  const subnet = config.ipam?.subnet ?? node.podCIDRs.find((c) => c.includes('.'));
  if (!subnet) throw new CniError(CNI_ERR.tryAgainLater, 'the node has no IPv4 podCIDR yet (the agent has not seen its node record)');
  return subnet;
}

/** The pod's veth MTU: the network config's, else the agent's (uplink less tunnel overhead), else the kernel's. */
export function podMtu(config: Pick<NetConfig, 'mtu'>, node: { mtu?: number | undefined }): number | undefined {
  return config.mtu ?? node.mtu;
}

export async function cmdAdd(env: CniEnv, config: NetConfig): Promise<unknown> {
  const node = await nodeInfo(config);
  const subnet = subnetOf(config, node);
  let ipam: HostLocalIpam;
  try {
    ipam = ipamFor(config, subnet);
  } catch (err) {
    throw new CniError(CNI_ERR.invalidConfig, (err as Error).message);
  }
  const ip = await ipam.allocate(env.containerId, env.ifname, env.args.IP).catch((err: Error) => {
    throw new CniError(CNI_ERR.io, `IPAM: ${err.message}`);
  });
  const host = hostIfname(env.containerId, env.ifname);
  try {
    // A retried ADD: start from a clean pair.
    await ipNode(config, ['link', 'del', host]).catch(() => undefined);
    const mtuValue = podMtu(config, node);
    const mtu = mtuValue ? ['mtu', String(mtuValue)] : [];
    await ipNode(config, ['link', 'add', host, ...mtu, 'type', 'veth', 'peer', 'name', env.ifname, ...mtu, 'netns', env.netns]);
    await ipNode(config, ['link', 'set', host, 'up']);
    const hostLink = await linkJson(ipNode(config, ['-j', 'link', 'show', 'dev', host]));
    if (!hostLink) throw new Error(`host veth ${host} vanished`);
    await ipPod(env.netns, ['link', 'set', 'lo', 'up']);
    await ipPod(env.netns, ['addr', 'add', `${ip}/32`, 'dev', env.ifname]);
    await ipPod(env.netns, ['link', 'set', env.ifname, 'up']);
    await ipPod(env.netns, ['route', 'replace', GATEWAY, 'dev', env.ifname, 'scope', 'link']);
    await ipPod(env.netns, ['route', 'replace', 'default', 'via', GATEWAY, 'dev', env.ifname]);
    await ipPod(env.netns, ['neigh', 'replace', GATEWAY, 'lladdr', hostLink.address, 'dev', env.ifname, 'nud', 'permanent']);
    const podLink = await linkJson(ipPod(env.netns, ['-j', 'link', 'show', 'dev', env.ifname]));
    if (!podLink) throw new Error(`pod interface ${env.ifname} vanished`);
    // Legacy host routing forwards through the kernel: it needs the route to the pod (BPF host routing does not).
    await ipNode(config, ['route', 'replace', `${ip}/32`, 'dev', host, 'scope', 'link']);
    const { attachPod } = await import('@sluice/datapath');
    attachPod(node.pinDir, host, config.nodeNetns);
    const endpoint = {
      id: env.containerId,
      ip,
      hostIfname: host,
      hostIfindex: hostLink.ifindex,
      hostMac: hostLink.address,
      mac: podLink.address,
      ...(env.args.K8S_POD_NAMESPACE ? { podNamespace: env.args.K8S_POD_NAMESPACE } : {}),
      ...(env.args.K8S_POD_NAME ? { podName: env.args.K8S_POD_NAME } : {}),
      ...(env.args.SLUICE_HEALTH === 'true' ? { health: true } : {}),
    };
    const res = await registerEndpoint(config, endpoint);
    if (res.status !== 200) throw new CniError(CNI_ERR.tryAgainLater, 'the Sluice agent refused the endpoint', JSON.stringify(res.json));
    return {
      cniVersion: config.cniVersion,
      interfaces: [
        { name: host, mac: hostLink.address },
        { name: env.ifname, mac: podLink.address, sandbox: env.netns },
      ],
      ips: [{ ...(config.cniVersion === '0.4.0' ? { version: '4' } : {}), address: `${ip}/32`, gateway: GATEWAY, interface: 1 }],
      routes: [{ dst: '0.0.0.0/0', gw: GATEWAY }],
      dns: {},
    };
  } catch (err) {
    // Leave nothing half-made: the runtime will retry ADD or call DEL.
    await ipNode(config, ['link', 'del', host]).catch(() => undefined);
    await ipam.release(env.containerId, env.ifname).catch(() => undefined);
    if (err instanceof CniError) throw err;
    throw new CniError(CNI_ERR.io, `setting up the pod network failed: ${(err as Error).message}`);
  }
}

export async function cmdDel(env: CniEnv, config: NetConfig): Promise<void> {
  // DEL must succeed when things are already gone; it only fails when it cannot tell what to release.
  const res = await agentCall(config, 'DELETE', `/v1/endpoints/${encodeURIComponent(env.containerId)}`).catch((err: CniError) => err);
  if (res instanceof CniError) process.stderr.write(`sluice-cni: ${res.message}; the agent will drop the endpoint when it sees the veth gone\n`);
  await ipNode(config, ['link', 'del', hostIfname(env.containerId, env.ifname)]).catch(() => undefined);
  let subnet = config.ipam?.subnet;
  if (!subnet) subnet = subnetOf(config, await nodeInfo(config));
  await ipamFor(config, subnet).release(env.containerId, env.ifname);
}

export async function cmdCheck(env: CniEnv, config: NetConfig): Promise<void> {
  const node = await nodeInfo(config);
  const ip = await ipamFor(config, subnetOf(config, node)).get(env.containerId, env.ifname);
  if (!ip) throw new CniError(CNI_ERR.unknownContainer, `no address allocated to container ${env.containerId}`);
  const host = hostIfname(env.containerId, env.ifname);
  const hostLink = await linkJson(ipNode(config, ['-j', 'link', 'show', 'dev', host]));
  if (!hostLink) throw new CniError(CNI_ERR.unknownContainer, `host veth ${host} is missing`);
  const addrs = JSON.parse(await ipPod(env.netns, ['-j', 'addr', 'show', 'dev', env.ifname]).catch(() => '[]')) as Array<{ addr_info?: Array<{ local: string }> }>;
  if (!addrs[0]?.addr_info?.some((a) => a.local === ip)) throw new CniError(CNI_ERR.unknownContainer, `${env.ifname} in ${env.netns} does not have ${ip}`);
  const res = await agentCall(config, 'GET', `/v1/endpoints/${encodeURIComponent(env.containerId)}`);
  const ep = res.json as { ip?: string; hostIfindex?: number };
  if (res.status !== 200 || ep.ip !== ip || ep.hostIfindex !== hostLink.ifindex) {
    throw new CniError(CNI_ERR.unknownContainer, `the agent does not have endpoint ${env.containerId} as ${ip} on ${host}`, JSON.stringify(res.json));
  }
}

/** Runs one invocation; returns what to print on stdout and the exit code. */
export async function runCni(env: NodeJS.ProcessEnv, stdin: string): Promise<{ stdout: string; code: number }> {
  let cniVersion = '1.0.0';
  try {
    const e = parseEnv(env);
    if (e.command === 'VERSION') {
      return { stdout: JSON.stringify({ cniVersion, supportedVersions: SUPPORTED_VERSIONS }), code: 0 };
    }
    const config = parseConfig(stdin);
    cniVersion = config.cniVersion;
    if (e.command === 'ADD') return { stdout: JSON.stringify(await cmdAdd(e, config)), code: 0 };
    if (e.command === 'DEL') await cmdDel(e, config);
    else await cmdCheck(e, config);
    return { stdout: '', code: 0 };
  } catch (err) {
    const e = err instanceof CniError ? err : new CniError(CNI_ERR.internal, (err as Error).message);
    return { stdout: JSON.stringify({ cniVersion, code: e.code, msg: e.message, details: e.details }), code: 1 };
  }
}
