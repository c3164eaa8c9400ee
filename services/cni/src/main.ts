/**
 * sluice-cni: the CNI plugin's entry (run through bin/sluice-cni). Reads the network config on stdin and the CNI_*
 * environment, prints the result (or the CNI error JSON) on stdout, exits non-zero on error.
 */
import { readFileSync } from 'node:fs';
import { runCni } from './plugin.ts';

// The container runtime runs a CNI plugin without arguments (input: CNI_* variables and stdin); arguments are a
// person asking, answered like every Sluice binary: --version, --help, anything else exit 2 with one line.
const args = process.argv.slice(2);
if (args.length > 0) {
  if (args[0] === '--version') {
    process.stdout.write(`${(JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version}\n`);
    process.exit(0);
  }
  if (args[0] === '--help' || args[0] === '-h') {
    process.stdout.write('Usage: sluice-cni (run by the container runtime: CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_PATH in the environment, the network configuration on stdin)\n\nSluice\'s CNI plugin (spec 1.0): ADD, DEL, CHECK, VERSION.\n\nOptions:\n  --version   print the version and exit\n  -h, --help  display help\n');
    process.exit(0);
  }
  process.stderr.write(`sluice-cni: unknown option '${args[0]}' (the plugin reads CNI_* variables and stdin; see --help)\n`);
  process.exit(2);
}

const chunks: Buffer[] = [];
if (process.env.CNI_COMMAND !== 'VERSION') for await (const c of process.stdin) chunks.push(c as Buffer);
const { stdout, code } = await runCni(process.env, Buffer.concat(chunks).toString('utf8'));
if (stdout) process.stdout.write(`${stdout}\n`);
process.exit(code);
