/**
 * sluice-cni: the CNI plugin's entry (run through bin/sluice-cni). Reads the network config on stdin and the CNI_*
 * environment, prints the result (or the CNI error JSON) on stdout, exits non-zero on error.
 */
import { runCni } from './plugin.ts';

const chunks: Buffer[] = [];
if (process.env.CNI_COMMAND !== 'VERSION') for await (const c of process.stdin) chunks.push(c as Buffer);
const { stdout, code } = await runCni(process.env, Buffer.concat(chunks).toString('utf8'));
if (stdout) process.stdout.write(`${stdout}\n`);
process.exit(code);
