/**
 * SIGTERM ends the health service within its grace period whatever etcd does (issue 20): here etcd is a socket that
 * accepts connections and never answers, so the node list never loads and the watches never close.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const main = fileURLToPath(new URL('../src/main.ts', import.meta.url));
let silentEtcd: Server;
const sockets: Socket[] = [];

beforeAll(async () => {
  silentEtcd = createServer((s) => void sockets.push(s));
  silentEtcd.listen(0, '127.0.0.1');
  await once(silentEtcd, 'listening');
});
afterAll(() => {
  for (const s of sockets) s.destroy();
  silentEtcd.close();
});

describe('health service shutdown', () => {
  it('exits by itself, with status 0, on SIGTERM while etcd never answers', async () => {
    const address = silentEtcd.address();
    if (!address || typeof address === 'string') throw new Error('no address');
    const child = spawn(process.execPath, ['--import', 'tsx', main, '--listen', '127.0.0.1:0', '--etcd-endpoints', `http://127.0.0.1:${address.port}`,
      '--insecure', '--metrics-port', '0', '--shutdown-grace', '2', '--log-level', 'info'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    try {
      // Up and waiting for etcd: the metrics listener is the last step before the wait, and the client's connection
      // to the silent etcd is made just after that line, so the test waits for both rather than racing the connect.
      for (let i = 0; i < 600 && !(out.includes('metrics and status listening') && sockets.length > 0); i++) await new Promise((r) => setTimeout(r, 100));
      expect(out, out).toContain('metrics and status listening');
      expect(sockets.length, out).toBeGreaterThan(0);
      const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
      child.kill('SIGTERM');
      const [code, signal] = await exited;
      expect(signal, out).toBeNull();
      expect(code, out).toBe(0);
      expect(out, out).toContain('shutting down');
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  }, 120_000);
});
