/**
 * `sluice health status` and `sluice health watch`, and the TLS flags every command that talks to the health service
 * shares (the agent's flag names: --health-tls-ca, --health-tls-cert, --health-tls-key, --health-tls-server-name).
 */
import { Option, type Command } from 'commander';
import { schemas, validate, z } from '@sluice/config';
import type { ClusterHealth, HealthClient } from '@sluice/health-api';
import { CliError, oneLine } from './errors.ts';
import type { Target } from './target.ts';
import { toYaml, OUTPUT_FORMATS } from './output.ts';

export const healthTlsSchema = z
  .object({
    healthTlsCa: z.string().min(1).optional(),
    healthTlsCert: z.string().min(1).optional(),
    healthTlsKey: z.string().min(1).optional(),
    healthTlsServerName: z.string().min(1).optional(),
  })
  .refine((o) => !!o.healthTlsCert === !!o.healthTlsKey, { message: 'needs both --health-tls-cert and --health-tls-key', path: ['healthTlsCert'] })
  .refine((o) => !o.healthTlsCert || !!o.healthTlsCa, { message: 'mutual TLS needs --health-tls-ca too', path: ['healthTlsCa'] });
export type HealthTls = z.infer<typeof healthTlsSchema>;

/** Global options: how to reach a health service behind TLS or mutual TLS. */
export function healthTlsOptions(): Option[] {
  return [
    new Option('--health-tls-ca <file>', 'CA bundle of the health service\'s certificate (PEM); enables TLS'),
    new Option('--health-tls-cert <file>', 'client certificate for a health service that requires mutual TLS (PEM)'),
    new Option('--health-tls-key <file>', 'client private key (PEM)'),
    new Option('--health-tls-server-name <name>', 'name to expect in the health service\'s certificate (default: the host of --health)'),
  ];
}

/** A client of the target's health service with the TLS flags applied. */
export async function healthClientFor(address: string, tls: HealthTls, deadlineMs: number): Promise<HealthClient> {
  const { clientCredentials, createHealthClient } = await import('@sluice/health-api');
  let credentials;
  try {
    credentials = clientCredentials({ ca: tls.healthTlsCa, cert: tls.healthTlsCert, key: tls.healthTlsKey });
  } catch (err) {
    throw new CliError(`cannot read the health TLS files: ${oneLine(err)}`, 2);
  }
  return createHealthClient(address, {
    credentials,
    deadlineMs,
    ...(tls.healthTlsServerName ? { channelOptions: { 'grpc.ssl_target_name_override': tls.healthTlsServerName } } : {}),
  });
}

const statusOptions = z.object({
  json: z.boolean().optional(),
  output: z.enum(OUTPUT_FORMATS).optional(),
  node: z.string().min(1).optional(),
  probe: z.boolean().optional(),
  probeTimeout: schemas.duration.pipe(z.number().min(1000)),
  succinct: z.boolean().optional(),
  verbose: z.boolean().optional(),
});

/**
 * --probe: the service answers from the agents' continuous probing, so "a fresh round now" is the first answer in
 * which every node was probed after the command started (each node is probed by several peers every round).
 */
export async function freshView(client: HealthClient, since: number, timeoutMs: number, sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))): Promise<ClusterHealth> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const view = await client.getClusterHealth();
    const stale = view.nodes.filter((n) => n.lastProbeUnixMs < since);
    if (!stale.length) return view;
    if (Date.now() >= deadline) {
      throw new CliError(`no fresh probing round within ${Math.round(timeoutMs / 1000)} s: ${stale.length} of ${view.nodes.length} nodes not probed since (${stale.slice(0, 5).map((n) => n.name).join(', ')}${stale.length > 5 ? ', …' : ''})`);
    }
    await sleep(500);
  }
}

export interface HealthIo {
  stdout: (text: string) => void;
}

export function addHealthCommands(
  health: Command,
  io: HealthIo,
  target: (cmd: Command) => Promise<Target>,
  tlsOf: (cmd: Command) => HealthTls,
): void {
  const needAddress = (t: Target) => {
    if (!t.healthAddress) throw new CliError('no health service known: pass --health host:port, or start the demo with npm start');
    return t.healthAddress;
  };

  health
    .command('status')
    .description('Probe results per node, in the shape of cilium-health status')
    .option('--json', 'print as JSON')
    .addOption(new Option('--node <name>', 'the node to ask from: printed first as (localhost), its broken paths called out'))
    .option('--probe', 'wait for a probing round that started after this command, instead of the latest results')
    .option('--probe-timeout <duration>', 'how long --probe waits', '60s')
    .option('--succinct', 'one line per node')
    .option('--verbose', 'who probed each path and when, agents, endpoints and broken paths')
    .action(async (_o, cmd: Command) => {
      const o = validate(statusOptions, cmd.opts());
      if (o.succinct && o.verbose) throw new CliError('--succinct and --verbose contradict each other', 2);
      const t = await target(cmd);
      const address = needAddress(t);
      const started = Date.now();
      const { formatHealthStatus, healthStatusJson } = await import('@sluice/health-api');
      const client = await healthClientFor(address, tlsOf(cmd), 5000);
      try {
        const view = await (o.probe ? freshView(client, started, o.probeTimeout) : client.getClusterHealth()).catch((err: unknown) => {
          if (err instanceof CliError) throw err;
          throw new CliError(`health service at ${address} unreachable: ${oneLine(err)}`);
        });
        if (o.node && !view.nodes.some((n) => n.name === o.node)) throw new CliError(`no node ${o.node} in the health view`);
        if (o.json) io.stdout(`${JSON.stringify({ ...healthStatusJson(view), ...(o.node ? { localhost: o.node } : {}) }, null, 2)}\n`);
        else io.stdout(formatHealthStatus(view, { node: o.node, succinct: o.succinct, verbose: o.verbose }));
      } finally {
        client.close();
      }
    });

  health
    .command('watch')
    .description('Stream changes of the nodes\' health (reachability, agent, endpoint, broken paths, joins, removals) until interrupted')
    .option('--initial', 'first print every node\'s current state')
    .addOption(new Option('--node <name>', 'mark this node as (localhost)'))
    .addOption(new Option('-o, --output <format>', 'output format: one line, one JSON object per line, or YAML documents').choices(OUTPUT_FORMATS))
    .option('--count <n>', 'stop after this many changes')
    .action(async (_o, cmd: Command, signal?: AbortSignal) => {
      const o = validate(z.object({ initial: z.boolean().optional(), node: z.string().min(1).optional(), output: z.enum(OUTPUT_FORMATS).optional(), count: schemas.positiveInt.optional() }), cmd.opts());
      const t = await target(cmd);
      const address = needAddress(t);
      const { formatHealthChange, healthChangeJson } = await import('@sluice/health-api');
      const client = await healthClientFor(address, tlsOf(cmd), 5000);
      const controller = new AbortController();
      const stop = () => controller.abort();
      process.once('SIGINT', stop);
      signal?.addEventListener('abort', stop, { once: true });
      let seen = 0;
      try {
        for await (const change of client.watchClusterHealth({ sendInitial: o.initial ?? false }, { signal: controller.signal })) {
          if (o.output === 'json') io.stdout(`${JSON.stringify(healthChangeJson(change))}\n`);
          else if (o.output === 'yaml') io.stdout(`---\n${toYaml(healthChangeJson(change))}`);
          else io.stdout(formatHealthChange(change, { node: o.node }));
          if (o.count && ++seen >= o.count) break;
        }
      } catch (err) {
        throw new CliError(`watching the health service at ${address}: ${oneLine(err)}`);
      } finally {
        process.removeListener('SIGINT', stop);
        client.close();
      }
    });
}
