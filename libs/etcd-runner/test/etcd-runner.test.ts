import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:net';
import { freePort, startEtcd, startEtcdCluster } from '../src/index.ts';

function etcdctl(endpoint: string, ...args: string[]): string {
  return execFileSync('etcdctl', ['--endpoints', endpoint, ...args], { env: { ...process.env, ETCDCTL_API: '3' } }).toString();
}

describe('startEtcd', () => {
  it('runs a real etcd on a free loopback port, keeps data across pause/resume and cleans up on stop', async () => {
    const etcd = await startEtcd({ maxTxnOps: 256, quotaBackendBytes: 64 * 1024 * 1024 });
    try {
      expect(etcd.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(existsSync(etcd.dataDir)).toBe(true);
      etcdctl(etcd.endpoint, 'put', 'k', 'v1');
      expect(etcdctl(etcd.endpoint, 'get', 'k', '--print-value-only').trim()).toBe('v1');

      const pid = etcd.pid!;
      await etcd.pause();
      expect(etcd.running).toBe(false);
      expect(() => process.kill(pid, 0)).toThrow();
      await etcd.resume();
      expect(etcd.running).toBe(true);
      expect(etcdctl(etcd.endpoint, 'get', 'k', '--print-value-only').trim()).toBe('v1');
    } finally {
      const pid = etcd.pid!;
      await etcd.stop();
      expect(existsSync(etcd.dataDir)).toBe(false);
      expect(() => process.kill(pid, 0)).toThrow();
    }
  });

  it('gives two servers their own ports and data', async () => {
    const [a, b] = await Promise.all([startEtcd(), startEtcd()]);
    try {
      expect(a.endpoint).not.toBe(b.endpoint);
      etcdctl(a.endpoint, 'put', 'only-a', '1');
      expect(etcdctl(b.endpoint, 'get', 'only-a', '--print-value-only').trim()).toBe('');
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
  });

  it('leaves neither a process nor a data dir behind when its owner exits without stop()', async () => {
    const script = `
      import { startEtcd } from ${JSON.stringify(new URL('../src/index.ts', import.meta.url).pathname)};
      const etcd = await startEtcd();
      console.log(JSON.stringify({ pid: etcd.pid, dataDir: etcd.dataDir }));
      process.exit(0);
    `;
    const owner = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    owner.stdout!.on('data', (d) => (out += String(d)));
    await new Promise((resolve) => owner.once('exit', resolve));
    const { pid, dataDir } = JSON.parse(out) as { pid: number; dataDir: string };
    expect(existsSync(dataDir)).toBe(false);
    const running = () => {
      try {
        return !readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.startsWith('Z');
      } catch {
        return false;
      }
    };
    for (let i = 0; i < 50 && running(); i++) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(running()).toBe(false);
  });

  it('fails clearly when the binary is missing', async () => {
    await expect(startEtcd({ binary: '/nonexistent/etcd', startTimeoutMs: 2000 })).rejects.toThrow(/etcd did not start/);
  });

  describe('a port taken before etcd binds it', () => {
    const hold = async (): Promise<{ server: Server; port: number }> => {
      const server = createServer();
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const address = server.address();
      if (typeof address !== 'object' || !address) throw new Error('no address');
      return { server, port: address.port };
    };

    it('starts again on other ports', async () => {
      const taken = await hold();
      const picked: number[] = [];
      const pickPort = async () => {
        const port = picked.length === 0 ? taken.port : await freePort();
        picked.push(port);
        return port;
      };
      try {
        const etcd = await startEtcd({ pickPort });
        try {
          expect(picked[0]).toBe(taken.port);
          // client + peer on the first attempt, client + peer on the second
          expect(picked).toHaveLength(4);
          expect(etcd.endpoint).toBe(`http://127.0.0.1:${picked[2]}`);
          etcdctl(etcd.endpoint, 'put', 'k', 'v');
          expect(etcdctl(etcd.endpoint, 'get', 'k', '--print-value-only').trim()).toBe('v');
        } finally {
          await etcd.stop();
        }
      } finally {
        taken.server.close();
      }
    });

    it('says so, with etcd\'s own words, for a client port the caller chose', async () => {
      const taken = await hold();
      try {
        await expect(startEtcd({ clientPort: taken.port })).rejects.toThrow(
          new RegExp(`etcd did not start: etcd exited \\(code 1, signal null\\): .*127\\.0\\.0\\.1:${taken.port}: bind: address already in use`),
        );
      } finally {
        taken.server.close();
      }
    });
  });
});

describe('startEtcdCluster', () => {
  const ctl = (files: { endpoints: string[]; ca?: string; cert?: string; key?: string }, ...args: string[]) =>
    execFileSync('etcdctl', ['--endpoints', files.endpoints.join(','), ...(files.ca ? ['--cacert', files.ca, '--cert', files.cert!, '--key', files.key!] : []), ...args], {
      env: { ...process.env, ETCDCTL_API: '3' },
      stdio: ['ignore', 'pipe', 'pipe'],
    }).toString();

  it('runs 3 members with mutual TLS; a client without a certificate is refused; the leader can be killed and another leads', async () => {
    const cluster = await startEtcdCluster({ members: 3, clientCertAuth: true });
    try {
      expect(cluster.endpoints).toHaveLength(3);
      for (const e of cluster.endpoints) expect(e).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      const root = cluster.clientFiles();
      ctl(root, 'put', 'k', 'v1');
      // Every member answers with the same data.
      for (const endpoint of cluster.endpoints) expect(ctl({ ...root, endpoints: [endpoint] }, 'get', 'k', '--print-value-only').trim()).toBe('v1');
      expect(() => ctl({ endpoints: cluster.endpoints.slice(0, 1), ca: root.ca, cert: undefined, key: undefined }, '--dial-timeout', '1s', 'get', 'k')).toThrow();
      expect(() => execFileSync('etcdctl', ['--endpoints', cluster.endpoints[0]!, '--cacert', root.ca!, '--dial-timeout', '1s', '--command-timeout', '2s', 'get', 'k'], { env: { ...process.env, ETCDCTL_API: '3' }, stdio: 'pipe' })).toThrow();

      const leader = await cluster.leader();
      const pid = leader.pid!;
      await leader.kill();
      expect(leader.running).toBe(false);
      expect(() => process.kill(pid, 0)).toThrow();
      const next = await cluster.leader();
      expect(next.name).not.toBe(leader.name);
      ctl(root, 'put', 'k', 'v2'); // two of three keep quorum
      await leader.resume();
      expect(ctl({ ...root, endpoints: [leader.endpoint] }, 'get', 'k', '--print-value-only', '--consistency', 's').trim()).toBe('v2');
    } finally {
      await cluster.stop();
    }
    for (const m of cluster.members) expect(existsSync(m.dataDir)).toBe(false);
    expect(existsSync(cluster.tls!.dir)).toBe(false);
  });

  it('issues client certificates whose CN is the user name', async () => {
    const etcd = await startEtcd({ tls: true });
    try {
      const files = etcd.clientFiles('sluice-agent-n1');
      const subject = execFileSync('openssl', ['x509', '-in', files.cert!, '-noout', '-subject']).toString();
      expect(subject).toMatch(/CN ?= ?sluice-agent-n1/);
      ctl(files, 'put', 'a', 'b');
      expect(ctl(files, 'get', 'a', '--print-value-only').trim()).toBe('b');
    } finally {
      await etcd.stop();
    }
  });
});

describe('a replacement etcd', () => {
  it('takes the place of a dead one: same address, same CA, none of its data', async () => {
    const a = await startEtcd({ clientCertAuth: true });
    let b: Awaited<ReturnType<typeof startEtcd>> | undefined;
    try {
      const files = a.clientFiles();
      const ctl = (...args: string[]) =>
        execFileSync('etcdctl', ['--endpoints', a.endpoint, '--cacert', files.ca!, '--cert', files.cert!, '--key', files.key!, ...args], { env: { ...process.env, ETCDCTL_API: '3' } }).toString();
      ctl('put', 'k', 'from-a');
      await a.kill();
      b = await startEtcd({ clientCertAuth: true, pki: a.tls, clientPort: Number(new URL(a.endpoint).port) });
      expect(b.endpoint).toBe(a.endpoint);
      expect(ctl('get', 'k', '--print-value-only').trim()).toBe(''); // the old client's files still work; the data is gone
    } finally {
      await b?.stop();
      await a.stop();
    }
  });
});
