/** The plugin's registration call: a 503 (the agent does not know the node's podCIDR yet) is retried; a 409 is final. */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig, registerEndpoint } from '../src/index.ts';

let dir: string;
let server: Server;
const answers: number[] = [];
let calls = 0;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sluice-cni-register-'));
  server = createServer((req, res) => {
    calls++;
    req.resume();
    const status = answers.shift() ?? 200;
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(status === 200 ? { programmed: true } : { error: `status ${status}` }));
  });
  await new Promise<void>((resolve) => server.listen(join(dir, 'agent.sock'), resolve));
});

afterAll(async () => {
  try {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

describe('registerEndpoint', () => {
  const config = () => parseConfig(JSON.stringify({ cniVersion: '1.0.0', name: 'sluice', type: 'sluice-cni', agentSocket: join(dir, 'agent.sock'), ipam: { dataDir: dir } }));

  it('retries while the agent answers 503, and returns its final answer', async () => {
    answers.push(503, 503);
    calls = 0;
    const res = await registerEndpoint(config(), { id: 'c1', ip: '10.0.0.2' }, 6, 5);
    expect(res.status).toBe(200);
    expect(calls).toBe(3);
  });

  it('does not retry a refusal, and gives up on 503 after its attempts', async () => {
    answers.push(409);
    calls = 0;
    expect((await registerEndpoint(config(), { id: 'c2', ip: '10.0.0.3' }, 6, 5)).status).toBe(409);
    expect(calls).toBe(1);
    answers.push(503, 503, 503);
    calls = 0;
    expect((await registerEndpoint(config(), { id: 'c3', ip: '10.0.0.4' }, 3, 5)).status).toBe(503);
    expect(calls).toBe(3);
  });
});
