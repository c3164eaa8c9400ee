/**
 * The agent's health HTTP port must listen INSIDE the node's network namespace (peers probe it at the node IP),
 * while the agent itself runs in the host namespace (it reaches etcd on the host's loopback and moves only its main
 * thread into the node namespace for tc calls). So this one listener is a tiny child process started with
 * `nsenter --net=/run/netns/<ns>` (not `ip netns exec`, which hides the bpffs). It answers GET /hello with 200 and
 * exits as soon as its stdin — a pipe from the agent — closes, so it never outlives the agent, even after SIGKILL.
 */
import { spawn, type ChildProcess } from 'node:child_process';

const SCRIPT = `
const http = require('node:http');
const [port, node] = process.argv.slice(1);
const server = http.createServer((req, res) => {
  res.writeHead(req.url === '/hello' || req.url === '/healthz' ? 200 : 404, { 'content-type': 'text/plain' });
  res.end(node + '\\n');
});
server.listen(Number(port), '0.0.0.0', () => process.stdout.write('listening\\n'));
server.on('error', (e) => { process.stderr.write('health listener: ' + e.message + '\\n'); process.exit(1); });
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
process.stdin.resume();
`;

export interface HealthListener {
  child: ChildProcess;
  stop(): void;
}

export async function startHealthListener(netns: string | undefined, port: number, node: string): Promise<HealthListener> {
  const args = ['-e', SCRIPT, String(port), node];
  const child = netns
    ? spawn('nsenter', [`--net=/run/netns/${netns}`, '--', process.execPath, ...args], { stdio: ['pipe', 'pipe', 'inherit'] })
    : spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('health listener did not start within 10 s')), 10_000);
    child.stdout!.once('data', () => (clearTimeout(timer), resolve()));
    child.once('exit', (code) => (clearTimeout(timer), reject(new Error(`health listener exited with code ${code}`))));
  });
  return {
    child,
    stop: () => {
      child.stdin?.end();
      if (child.exitCode === null) child.kill('SIGTERM');
    },
  };
}
