#!/usr/bin/env -S npx tsx
/**
 * sluice-etcd-auth: creates Sluice's etcd roles and users (least privilege, see src/auth.ts) and enables etcd's
 * authentication. Run it as etcd's root (a client certificate with CN=root, or --etcd-username root); run it again
 * when nodes join (it converges). Prints what it did as JSON.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, configOrExit, etcdFlags, etcdFlagShape, flag, parseOptions, resolveEtcdConfig, z } from '@sluice/config';
import { authPlan, createKvClient, keySchema, setupAuth } from './index.ts';

const program = new Command('sluice-etcd-auth')
  .description('Create Sluice\'s etcd roles and users (operator writes the state, each agent only its own node\'s keys, health and CLI read) and enable etcd auth')
  .addOption(flag('--nodes <names>', 'comma-separated node names that get an agent user (default: every node record in etcd)'))
  .addOption(flag('--password-dir <dir>', 'a file per user name holding its password, for users that log in with one (others authenticate by their certificate\'s CN)'))
  .addOption(flag('--no-enable', 'create the roles and users but leave auth off'))
  .addOption(flag('--dry-run', 'print the roles and users that would be created, and do nothing', false));
for (const option of etcdFlags()) program.addOption(option);

const options = parseOptions(
  program,
  z.object({
    ...etcdFlagShape,
    nodes: z.string().regex(/^[a-z0-9]([-a-z0-9.,]*[a-z0-9])?$/, 'must be comma-separated node names').optional(),
    passwordDir: z.string().min(1).optional(),
    enable: z.boolean(),
    dryRun: z.boolean(),
  }),
);
const etcd = configOrExit(program, () => resolveEtcdConfig(options));
const keys = keySchema(etcd.prefix);
const client = createKvClient(etcd.client);
try {
  const nodes = options.nodes
    ? options.nodes.split(',').filter(Boolean)
    : (await client.getAll().prefix(keys.prefix('nodes')).keys()).map((k) => keys.parse('nodes', k)?.join('/') ?? '').filter(Boolean);
  if (options.dryRun) {
    process.stdout.write(`${JSON.stringify(authPlan(keys, nodes), null, 2)}\n`);
  } else {
    const password = (user: string) => {
      const file = options.passwordDir ? join(options.passwordDir, user) : undefined;
      return file && existsSync(file) ? readFileSync(file, 'utf8').split(/\r?\n/)[0] : undefined;
    };
    const report = await setupAuth(client, keys, { nodes, password, enable: options.enable });
    process.stdout.write(`${JSON.stringify({ nodes, ...report }, null, 2)}\n`);
  }
} catch (err) {
  process.stderr.write(`sluice-etcd-auth: ${(err as Error).message.split('\n')[0]}\n`);
  process.exitCode = 1;
} finally {
  client.close();
}
