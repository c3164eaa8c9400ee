/**
 * An operator-like client for loop-stall.ts, in its own process: a paginated list of each kind the operator reads
 * (nodes, pods, services, EndpointSlices), then a watch of each from its list's resourceVersion, re-watched from the
 * last resourceVersion seen when a stream ends. The bytes are counted, not parsed. Tells its parent once every kind
 * is listed and watched.
 */
import { request, type IncomingMessage } from 'node:http';

const base = process.argv[2]!;
const KINDS: [path: string, limit: number][] = [
  ['/api/v1/nodes', 40], ['/api/v1/pods', 500], ['/api/v1/services', 500], ['/apis/discovery.k8s.io/v1/endpointslices', 500],
];

const get = (url: string) => new Promise<IncomingMessage>((resolve, reject) => request(url, resolve).on('error', reject).end());

async function body(url: string): Promise<string> {
  const res = await get(url);
  const chunks: Buffer[] = [];
  for await (const c of res) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString();
}

async function list(path: string, limit: number): Promise<string> {
  let token = '';
  let rv = '';
  do {
    const text = await body(`${base}${path}?limit=${limit}${token ? `&continue=${encodeURIComponent(token)}` : ''}`);
    // The list's own metadata comes before its items.
    const head = text.slice(0, 600);
    rv = /"resourceVersion":"(\d+)"/.exec(head)?.[1] ?? rv;
    token = /"continue":"([^"]+)"/.exec(head)?.[1] ?? '';
  } while (token);
  return rv;
}

function watch(path: string, from: string): void {
  let rv = from;
  const req = request(`${base}${path}?watch=1&allowWatchBookmarks=true&resourceVersion=${rv}`, (res) => {
    let tail = '';
    res.on('data', (chunk: Buffer) => {
      // The last complete event's resourceVersion (its object's metadata is near the start of its line).
      const text = tail + chunk.toString('latin1', Math.max(0, chunk.length - 20_000));
      const end = text.lastIndexOf('\n');
      if (end >= 0) {
        const start = text.lastIndexOf('\n', end - 1) + 1;
        rv = /"resourceVersion":"(\d+)"/.exec(text.slice(start, start + 2000))?.[1] ?? rv;
        tail = text.slice(end + 1);
      } else tail = text.slice(-20_000);
    });
    res.on('end', () => setTimeout(() => void relist(path), 100));
  });
  req.on('error', () => setTimeout(() => void relist(path), 1000));
  req.end();
}

async function relist(path: string): Promise<void> {
  const limit = KINDS.find(([p]) => p === path)![1];
  watch(path, await list(path, limit));
}

const t0 = Date.now();
for (const [path, limit] of KINDS) {
  const rv = await list(path, limit);
  watch(path, rv);
}
process.stderr.write(`CLIENT synced in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
process.send?.('synced');
process.on('SIGTERM', () => process.exit(0));
process.on('disconnect', () => process.exit(0));
