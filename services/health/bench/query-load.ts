/**
 * Child process of the health benchmark: the user asking for the whole cluster view. Kept out of the benchmark's own
 * process, whose heap holds the in-process phase's garbage, so that the latencies are the service's and the wire's,
 * not the client's garbage collector. Commands on stdin, one JSON line of sorted latencies (ms) on stdout for each:
 *   "burst <n>"  n calls back to back;
 *   "start"      one call every 100 ms (each returns all 5,000 nodes) until "stop".
 * Answers are kept as bytes: no decoding on this side of the wire.
 */
import { createInterface } from 'node:readline';
import * as grpc from '@grpc/grpc-js';
import { HEALTH_CHANNEL_OPTIONS } from '@sluice/health-api';

const { address } = JSON.parse(process.argv[2] ?? '{}') as { address: string };
// The channel options of @sluice/health-api's typed client (a 4 MiB HTTP/2 window for the ~0.8 MiB answer).
const client = new grpc.Client(address, grpc.credentials.createInsecure(), HEALTH_CHANNEL_OPTIONS);
const call = () =>
  new Promise<Buffer>((resolve, reject) =>
    client.makeUnaryRequest<Buffer, Buffer>(
      '/sluice.health.v1.ClusterHealth/GetClusterHealth',
      (b) => b,
      (b) => b,
      Buffer.alloc(0),
      new grpc.Metadata(),
      { deadline: Date.now() + 30_000 },
      (e, v) => (e ? reject(e) : resolve(v!)),
    ),
  );
const timed = async () => {
  const t = performance.now();
  const bytes = await call();
  return { ms: performance.now() - t, size: bytes.length };
};
const reply = (samples: number[], size: number) => process.stdout.write(`${JSON.stringify({ samples: samples.sort((a, b) => a - b), size })}\n`);

let periodic: Promise<void> | undefined;
let running = false;
for await (const line of createInterface({ input: process.stdin })) {
  const [command, arg] = line.trim().split(' ');
  if (command === 'burst') {
    const samples: number[] = [];
    let size = 0;
    for (let i = 0; i < Number(arg); i++) {
      const r = await timed();
      samples.push(r.ms);
      size = r.size;
    }
    reply(samples, size);
  } else if (command === 'start') {
    running = true;
    const samples: number[] = [];
    let size = 0;
    periodic = (async () => {
      while (running) {
        const r = await timed();
        samples.push(r.ms);
        size = r.size;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      reply(samples, size);
    })();
  } else if (command === 'stop') {
    running = false;
    await periodic;
  } else if (command === 'exit') {
    break;
  }
}
client.close();
process.exit(0);
