/**
 * The `sluice` command tree. `runCli(argv, io)` returns the exit code instead of exiting, so tests run it in-process:
 * 0 success, 1 a failure to report (not running, a failed test), 2 a bad flag or argument (one line on stderr).
 */
import { Command, CommanderError, Option } from 'commander';
import { addStandardOptions, applyConfigDir, ConfigError, configDirOf, etcdFlags, flag, oneLineError, validate, z } from '@sluice/config';
import type { Datapath } from '@sluice/datapath';
import type { ProbeRunner } from './connectivity.ts';
import { CliError, oneLine } from './errors.ts';
import { addHealthCommands, healthTlsOptions, healthTlsSchema, type HealthTls } from './health-commands.ts';
import { addOutputFormats } from './output.ts';
import { globalOptionsSchema, requireDemo, resolveTarget, type Target } from './target.ts';

// The heavy modules (gRPC, the Kubernetes client, libbpf through koffi) load only in the command that needs them, so
// that --help and a bad flag answer at once.
const BPF_MAPS = ['endpoints', 'ipcache', 'tunnel'] as const;

export interface Io {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** Replaces the real probes (unit tests of the connectivity command's rendering and exit code). */
  probeRunner?: ProbeRunner;
}

export const processIo = (): Io => ({
  stdout: (t) => process.stdout.write(t),
  stderr: (t) => process.stderr.write(t),
  env: process.env,
  cwd: process.cwd(),
});

const json = (value: unknown) => `${JSON.stringify(value, null, 2)}\n`;

export function buildProgram(io: Io, setExit: (code: number) => void): Command {
  const program = new Command('sluice')
    .description('Inspect and test a Sluice cluster (by default the demo started with npm start, found through .sluice/demo.json)')
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr, outputError: (text, write) => write(oneLineError(text)) })
    .showSuggestionAfterError(true)
    .exitOverride()
    .addOption(flag('--health <address>', 'health service gRPC address host:port (default: the demo\'s)'))
    .addOption(flag('--kubeconfig <file>', 'kubeconfig of the Kubernetes API server (default: the demo\'s)'))
    .addOption(flag('--demo-state <file>', 'the demo state file (default: .sluice/demo.json up from the cwd)'));
  for (const option of etcdFlags({ endpointsNote: 'default: the demo\'s' })) program.addOption(option);
  addStandardOptions(program);

  const target = async (cmd: Command): Promise<Target> => {
    const globals = validate(globalOptionsSchema, cmd.optsWithGlobals());
    return resolveTarget(globals, io.env, io.cwd);
  };
  const opts = <S extends z.ZodType>(cmd: Command, schema: S): z.infer<S> => validate(schema, cmd.opts());
  const tlsOf = (cmd: Command): HealthTls => validate(healthTlsSchema, cmd.optsWithGlobals());
  for (const option of healthTlsOptions()) program.addOption(option);

  program
    .command('status')
    .description('One screen on the cluster: KVStore, Kubernetes, operator, agents, host routing, masquerading, endpoints, controllers, cluster health')
    .option('--json', 'print the report as JSON')
    .addOption(new Option('--node <name>', 'the agent-side lines for this node only'))
    .option('--verbose', 'every section\'s details below its line')
    .option('--brief', 'one line: OK, or what is wrong')
    .option('--wait', 'wait until the cluster is ready (no section in error, every node reachable) before printing')
    .option('--wait-timeout <duration>', 'how long --wait waits', '5m')
    .action(async (_o, cmd: Command) => {
      const { schemas } = await import('@sluice/config');
      const o = opts(cmd, z.object({
        json: z.boolean().optional(), node: z.string().min(1).optional(), verbose: z.boolean().optional(), brief: z.boolean().optional(),
        wait: z.boolean().optional(), waitTimeout: schemas.duration.pipe(z.number().min(1000)),
      }));
      if (o.verbose && o.brief) throw new CliError('--verbose and --brief contradict each other', 2);
      const { failed, gatherStatus, ready } = await import('./status.ts');
      const { renderBrief, renderStatus } = await import('./render.ts');
      const t = await target(cmd);
      const gather = () => gatherStatus(t, { node: o.node, healthTls: tlsOf(cmd) });
      let report = await gather();
      const deadline = Date.now() + o.waitTimeout;
      while (o.wait && !ready(report) && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 1000));
        report = await gather();
      }
      io.stdout(o.json ? json(report) : o.brief ? renderBrief(report) : renderStatus(report, { verbose: o.verbose }));
      if (failed(report) || (o.wait && !ready(report))) setExit(1);
    });

  const health = program.command('health').description('The cluster health service');
  addHealthCommands(health, io, target, tlsOf);

  program
    .command('nodes')
    .description('The nodes etcd holds (as the operator wrote them) with their agents\' state')
    .option('--json', 'print as JSON')
    .action(async (_o, cmd: Command) => {
      const o = opts(cmd, z.object({ json: z.boolean().optional() }));
      const { listNodes, renderNodes } = await import('./inventory.ts');
      const nodes = await listNodes(await target(cmd));
      io.stdout(o.json ? json(nodes) : renderNodes(nodes.items));
      for (const e of nodes.errors) io.stderr(`sluice: unreadable record ${e}\n`);
    });

  program
    .command('endpoints')
    .description('The endpoints (pods) etcd holds')
    .option('--json', 'print as JSON')
    .addOption(new Option('--node <name>', 'only the endpoints of this node'))
    .action(async (_o, cmd: Command) => {
      const o = opts(cmd, z.object({ json: z.boolean().optional(), node: z.string().min(1).optional() }));
      const { listEndpoints, renderEndpoints } = await import('./inventory.ts');
      const endpoints = await listEndpoints(await target(cmd), o.node);
      io.stdout(o.json ? json(endpoints) : renderEndpoints(endpoints.items));
      for (const e of endpoints.errors) io.stderr(`sluice: unreadable record ${e}\n`);
    });

  const bpf = program.command('bpf').description('What a node\'s BPF maps hold (read from the pinned maps; needs root)');
  for (const map of BPF_MAPS) {
    bpf
      .command(map)
      .description(`The ${map} map of a node`)
      .requiredOption('--node <name>', 'the node')
      .option('--pin-dir <dir>', 'the node\'s bpffs pin directory (default: from the demo, else /sys/fs/bpf/sluice/<node>)')
      .option('--json', 'print as JSON')
      .action(async (_o, cmd: Command) => {
        const o = opts(cmd, z.object({ node: z.string().min(1), pinDir: z.string().min(1).optional(), json: z.boolean().optional() }));
        // The pin dir alone is enough: no need for etcd, or a demo, when it is given.
        const t = o.pinDir ? undefined : await target(cmd).catch(() => undefined);
        const { openNodeMaps, pinDirFor, readBpfMap, renderBpf } = await import('./bpf.ts');
        const dp = openNodeMaps(o.node, pinDirFor(t, o.node, o.pinDir));
        try {
          const rows = readBpfMap(dp, map);
          io.stdout(o.json ? json(rows) : renderBpf(map, rows));
        } finally {
          dp.close();
        }
      });
  }

  // Services (kube-proxy replacement): the frontends a node load-balances, and its raw load-balancer maps.
  const nodeMapsOptions = z.object({ node: z.string().min(1), pinDir: z.string().min(1).optional(), json: z.boolean().optional() });
  program
    .command('service')
    .description('Services as a node load-balances them')
    .command('list')
    .description('Every frontend of a node: ID, frontend, service type, each backend (active, terminating), like cilium-dbg service list')
    .requiredOption('--node <name>', 'the node (traffic policies Local make the answer per node)')
    .option('--pin-dir <dir>', 'the node\'s bpffs pin directory, for the ids (default: from the demo, else /sys/fs/bpf/sluice/<node>)')
    .option('--json', 'print as JSON')
    .action(async (_o, cmd: Command) => {
      const o = opts(cmd, nodeMapsOptions);
      const t = await target(cmd);
      const { openCluster } = await import('./cluster.ts');
      const { listServices, renderServices } = await import('./services.ts');
      const { openNodeMaps, pinDirFor } = await import('./bpf.ts');
      // The ids come from the node's maps; without them (not root, another machine) the list still prints.
      let dp: Awaited<ReturnType<typeof openNodeMaps>> | undefined;
      try {
        dp = openNodeMaps(o.node, pinDirFor(t, o.node, o.pinDir));
      } catch {
        dp = undefined;
      }
      const reader = openCluster(t.etcd, t.etcdRoot);
      try {
        const rows = await listServices(reader, o.node, dp);
        io.stdout(o.json ? json(rows.items) : renderServices(rows.items));
        for (const e of rows.errors) io.stderr(`sluice: unreadable record ${e}\n`);
      } finally {
        reader.close();
        dp?.close();
      }
    });
  /** A `sluice bpf <group> list` command over one node's pinned maps: `show` gives the JSON value and the table. */
  const nodeMapsList = (group: string, groupDescription: string, description: string, show: (dp: Datapath) => Promise<{ value: unknown; text: string }>) =>
    bpf
      .command(group)
      .description(groupDescription)
      .command('list')
      .description(description)
      .requiredOption('--node <name>', 'the node')
      .option('--pin-dir <dir>', 'the node\'s bpffs pin directory (default: from the demo, else /sys/fs/bpf/sluice/<node>)')
      .option('--json', 'print as JSON')
      .action(async (_o, cmd: Command) => {
        const o = opts(cmd, nodeMapsOptions);
        const t = o.pinDir ? undefined : await target(cmd).catch(() => undefined);
        const { openNodeMaps, pinDirFor } = await import('./bpf.ts');
        const dp = openNodeMaps(o.node, pinDirFor(t, o.node, o.pinDir));
        try {
          const { value, text } = await show(dp);
          io.stdout(o.json ? json(value) : text);
        } finally {
          dp.close();
        }
      });
  nodeMapsList('ipmasq', 'ip-masq-agent\'s map of a node', 'The nonMasqueradeCIDRs a node\'s BPF masquerade leaves alone (sl_ipmasq), like cilium-dbg bpf ipmasq list', async (dp) => {
    const { readIpmasq, renderIpmasq } = await import('./ipmasq.ts');
    const entries = readIpmasq(dp);
    return { value: entries, text: renderIpmasq(entries) };
  });
  nodeMapsList('lb', 'The load-balancer maps of a node', 'Frontends, backends, Maglev tables and connection-tracking counts as the node\'s maps hold them', async (dp) => {
    const { readLbMaps, renderLbMaps } = await import('./services.ts');
    const view = readLbMaps(dp);
    return { value: view, text: renderLbMaps(view) };
  });

  const connectivity = program.command('connectivity').description('Connectivity checks');
  connectivity
    .command('test')
    .description('Pod to pod on the same node and across nodes, pod to node, and the health paths, from inside the lab\'s pods')
    .option('--timeout <duration>', 'per-probe timeout', '3s')
    .option('--json', 'print the results as JSON')
    .action(async (_o, cmd: Command) => {
      const { schemas } = await import('@sluice/config');
      const { connectivityFailed, planTests, readHealthRecords, renderResult, renderSummary, runTests } = await import('./connectivity.ts');
      const o = opts(cmd, z.object({ timeout: schemas.duration.pipe(z.number().min(100)), json: z.boolean().optional() }));
      const t = await target(cmd);
      const demo = requireDemo(t, 'sluice connectivity test');
      if (!demo.pods.length) throw new CliError(`the demo has no lab pods to test from${demo.labError ? ` (${demo.labError})` : ''}`);
      const records = await readHealthRecords(t).catch(() => new Map());
      const tests = planTests(demo, records, t.healthAddress);
      if (!o.json) io.stdout(`ℹ️  Connectivity test: ${demo.nodes.length} nodes, ${demo.pods.length} pods, ${tests.length} tests\n`);
      const results = await runTests(tests, { runner: io.probeRunner, timeoutMs: o.timeout });
      if (o.json) io.stdout(json({ ok: !connectivityFailed(results), results }));
      else {
        for (const r of results) io.stdout(renderResult(r));
        io.stdout(renderSummary(results));
      }
      if (connectivityFailed(results)) setExit(1);
    });

  addOutputFormats(program, io);
  return program;
}

export async function runCli(argv: readonly string[], io: Io = processIo()): Promise<number> {
  let code = 0;
  const program = buildProgram(io, (c) => (code = c));
  try {
    const configDir = configDirOf(argv, io.env);
    if (configDir) applyConfigDir(program, configDir);
    await program.parseAsync(argv as string[], { from: 'user' });
    return code;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return 0;
      // A bare group (`sluice bpf`) prints its help, as git does, and that is a usage error.
      return err.exitCode === 0 ? 0 : 2;
    }
    if (err instanceof ConfigError) {
      io.stderr(`sluice: ${err.message}\n`);
      return 2;
    }
    if (err instanceof CliError) {
      io.stderr(`sluice: ${err.message}\n`);
      return err.exitCode;
    }
    io.stderr(`sluice: ${oneLine(err)}\n`);
    return 1;
  }
}
