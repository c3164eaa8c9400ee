import { createServer, connect, type Server, type Socket } from 'node:net';

/**
 * A TCP proxy in front of etcd that a test can cut and restore, so that ONE client loses its connection while etcd
 * and every other client go on (stopping etcd would cut them all).
 */
export interface CutProxy {
  /** The URL clients use instead of etcd's. */
  endpoint: string;
  /** Destroys every connection and refuses new ones until restore(). */
  cut(): void;
  restore(): void;
  /** Sends new connections to another server from now on (as a DNS name moved to a replacement etcd would). */
  retarget(target: string): void;
  close(): Promise<void>;
}

export async function startProxy(target: string): Promise<CutProxy> {
  let url = new URL(target);
  const sockets = new Set<Socket>();
  let open = true;
  const server: Server = createServer((client) => {
    if (!open) {
      client.destroy();
      return;
    }
    const upstream = connect(Number(url.port), url.hostname);
    sockets.add(client);
    sockets.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    cut() {
      open = false;
      for (const socket of sockets) socket.destroy();
      sockets.clear();
    },
    restore() {
      open = true;
    },
    retarget(target) {
      url = new URL(target);
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Polls `check` until it returns true or the time runs out (tests wait for behaviour, they do not assert timings). */
export async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
