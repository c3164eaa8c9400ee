/**
 * `npm start`: brings up a Sluice cluster on this machine and tears it down on Ctrl-C. It writes where everything is
 * to .sluice/demo.json, which the `sluice` CLI reads to find the demo.
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Command, flag, parseOptions, z } from '@sluice/config';
import { startEtcd, type EtcdServer } from '@sluice/etcd-runner';

const program = new Command('sluice-demo')
  .description('Start a demo Sluice cluster on this machine (Ctrl-C stops it and removes everything it made)')
  .addOption(flag('--state-dir <dir>', 'where the demo writes demo.json and its kubeconfig', '.sluice'));
const options = parseOptions(program, z.object({ stateDir: z.string().min(1) }));

const step = (what: string) => process.stdout.write(`  … ${what}\r`);
const done = (what: string, detail = '') => process.stdout.write(`  ✔ ${what}${detail ? `  ${detail}` : ''}\n`);

let etcd: EtcdServer | undefined;
let stopping = false;

async function shutdown(code: number): Promise<never> {
  if (stopping) process.exit(code);
  stopping = true;
  process.stdout.write('\nStopping the demo…\n');
  await etcd?.stop();
  await rm(join(options.stateDir, 'demo.json'), { force: true });
  process.stdout.write('Stopped; nothing left behind.\n');
  process.exit(code);
}
process.on('SIGINT', () => void shutdown(0));
process.on('SIGTERM', () => void shutdown(0));

try {
  process.stdout.write('Starting the Sluice demo cluster\n');
  step('etcd');
  etcd = await startEtcd();
  done('etcd', etcd.endpoint);

  await mkdir(options.stateDir, { recursive: true });
  const state = { etcd: { endpoints: [etcd.endpoint] }, startedAt: new Date().toISOString(), pid: process.pid };
  await writeFile(join(options.stateDir, 'demo.json'), `${JSON.stringify(state, null, 2)}\n`);
  process.stdout.write(`\nThe demo is up. Its addresses are in ${join(options.stateDir, 'demo.json')}\n`);
  process.stdout.write(`  etcd:  ETCDCTL_API=3 etcdctl --endpoints ${etcd.endpoint} endpoint status -w table\n`);
  process.stdout.write('\nPress Ctrl-C to stop it.\n');
} catch (err) {
  process.stderr.write(`demo failed to start: ${(err as Error).message}\n`);
  await shutdown(1);
}
