/**
 * Child process of the health benchmark: plays the 5,000 agents. Each agent keeps its ReportProbes stream open (as
 * the prober's sink does) and sends one batch per round. Rounds are given as pacing intervals (0: as fast as it
 * goes); before each round it prints "start <i>" on stdout so that the parent can time how fast the server takes it.
 */
import { createInterface } from 'node:readline';
import * as grpc from '@grpc/grpc-js';
import { ClusterHealthClient } from '@sluice/health-api';
import { probePlan } from '@sluice/prober';
import { N, roundReports } from './sim.ts';

const { address, round, paces } = JSON.parse(process.argv[2] ?? '{}') as { address: string; round: number; paces: number[] };
const client = new ClusterHealthClient(address, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
  ReportProbes(m: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, v?: unknown) => void): grpc.ClientWritableStream<unknown>;
};
const plan = probePlan(N);
const answered: Promise<unknown>[] = [];
const streams = Array.from({ length: N }, () => {
  let stream!: grpc.ClientWritableStream<unknown>;
  answered.push(new Promise((resolve, reject) => (stream = client.ReportProbes(new grpc.Metadata(), {}, (e, v) => (e ? reject(e) : resolve(v))))));
  return stream;
});
const input = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const waitForInput = () => input.next();
for (const [r, paceMs] of paces.entries()) {
  const reports = roundReports(plan, round + r, Date.now());
  await waitForInput();
  process.stdout.write(`start ${r}\n`);
  const began = performance.now();
  for (let i = 0; i < reports.length; i++) {
    if (paceMs) {
      const due = began + (i * paceMs) / reports.length;
      if (due > performance.now()) await new Promise((resolve) => setTimeout(resolve, due - performance.now()));
    }
    streams[i % N]!.write(reports[i]);
  }
}
// The streams end only when the parent says so, after its measurements: 5,000 streams closing at once is a burst of
// its own that the steady load never has.
await waitForInput();
for (const stream of streams) stream.end();
await Promise.all(answered);
client.close();
process.stdout.write('done\n');
process.exit(0);
