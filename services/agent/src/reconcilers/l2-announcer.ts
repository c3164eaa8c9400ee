/**
 * L2 announcements: this node answers ARP on its uplink for the LoadBalancer/external addresses it holds the lease of.
 *
 * Who announces: one etcd key per address, `keys.l2Lease(ip)` = node name, created only if absent on an etcd lease of
 * this agent with a short TTL (`leaseTtlSeconds`, default 2 s). etcd leases rather than Kubernetes Lease objects (as
 * Cilium uses): in Sluice the agents talk only to etcd, never to the API server (they have no Kubernetes token), and an
 * etcd lease is kept alive on the connection the agent already holds; the create-if-absent transaction gives mutual
 * exclusion without a per-address renew loop. Every eligible agent watches the lease prefix and tries to create a key
 * the moment it is deleted: on a graceful stop (the lease is revoked), when the holder's uplink loses carrier (it
 * withdraws at once), or at the latest one TTL after the holder died or was cut off from etcd. A holder that loses
 * its lease (etcd unreachable) keeps announcing — every node's datapath serves every address, so an etcd outage must
 * not take the Services off the network — and takes its keys back on a new lease when etcd returns, or withdraws when
 * it sees another node's key; only a node cut off from etcd but not from the clients may announce beside the new
 * holder until it reaches etcd again.
 *
 * How it answers (the kernel mechanism): proxy ARP. For each address the agent adds a proxy neighbour entry on the
 * uplink (`ip neigh replace proxy <ip> dev <uplink>`) and a route for it through `lo` (`proto 78`, how we recognise
 * our own; the routes reconciler owns only proto 77). The kernel answers an ARP request for a proxy entry only when
 * it would forward to the address through another device (forwarding is on in a node), hence the route; with
 * `proxy_delay` 0 on the uplink it answers at once instead of after a random delay of up to 0.8 s. The address is
 * NOT made local to the node: the BPF program on the uplink translates the Service's traffic before the stack sees
 * it, and its replies leave with the Service's address as their source, which the kernel would drop as a martian if
 * the address were local. Traffic to other ports of the address goes into lo and dies there.
 * When it takes an address over the agent sends gratuitous ARP (`arping -U`, Debian's iputils-arping; the node
 * namespace gets ip_nonlocal_bind=1 so arping may use the address as its source) so that clients and switches move to
 * its MAC at once instead of waiting for their neighbour entry to go stale. Losing the lease, or the uplink's carrier,
 * removes the entry and the route. All of this happens inside the node's network namespace.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { run } from '@sluice/netns';
import { watchPrefix, type Etcd3, type KeySchema, type PrefixWatch } from '@sluice/kvstore';
import type { Logger } from '@sluice/log';
import { Counter, type Registry } from '@sluice/metrics';
import { decodeSlim, decodeSlimL2Announcement, type SlimL2Announcement, type SlimNode } from '@sluice/slim';
import type { Lease } from 'etcd3';
import { Reconciler, type PruneResult, type ReconcileTarget, type ReconcilerStatus, type RowFailure } from '../reconciler.ts';
import { L2AnnouncementsTable, type L2Row } from '../tables/l2-announcements.ts';

/** Route protocol number of the L2 announcer's routes (the routes reconciler's are 77). */
export const L2_ROUTE_PROTO = 78;

export interface L2TargetOptions {
  netns?: string;
  uplink: string;
  /** Gratuitous ARP after taking an address over. Default true. */
  gratuitousArp?: boolean;
  log: Logger;
}

/** The kernel side: a proxy neighbour entry on the uplink and a proto-78 route via lo per address; GARP when added. */
export class L2AnnounceTarget implements ReconcileTarget<L2Row> {
  readonly name = 'l2-announcements';
  private prepared = false;

  constructor(private readonly options: L2TargetOptions) {}

  private ip(args: string[]) {
    return run('ip', [...(this.options.netns ? ['-n', this.options.netns] : []), ...args], { timeoutMs: 10_000 });
  }

  private exec(cmd: string, args: string[]) {
    const [c, ...rest] = this.options.netns ? ['ip', 'netns', 'exec', this.options.netns, cmd, ...args] : [cmd, ...args];
    return run(c!, rest, { timeoutMs: 10_000 });
  }

  /** Once: answer proxied ARP requests at once, and let arping use a non-local source. */
  private async prepare(): Promise<void> {
    if (this.prepared) return;
    const r = await this.exec('sysctl', ['-q', '-w', `net.ipv4.neigh.${this.options.uplink}.proxy_delay=0`, 'net.ipv4.ip_nonlocal_bind=1']);
    if (r.code !== 0) throw new Error(`sysctl in the node's namespace: ${r.stderr.trim() || `exit ${r.code}`}`);
    this.prepared = true;
  }

  /** The addresses we announce now (our routes). */
  async current(): Promise<string[]> {
    const r = await this.ip(['-j', '-4', 'route', 'show', 'table', 'main', 'proto', String(L2_ROUTE_PROTO)]);
    if (r.code !== 0) throw new Error(`ip route show: ${r.stderr.trim() || `exit ${r.code}`}`);
    const routes = JSON.parse(r.stdout || '[]') as Array<{ dst?: string; dev?: string }>;
    return routes.filter((x) => x.dev === 'lo' && x.dst && !x.dst.includes('/')).map((x) => x.dst!);
  }

  async update(rows: ReadonlyArray<readonly [string, L2Row]>): Promise<RowFailure[]> {
    await this.prepare();
    const failures: RowFailure[] = [];
    for (const [ip, row] of rows) {
      // The route first: the proxy entry answers only once the kernel would forward the address elsewhere.
      const route = await this.ip(['route', 'replace', `${ip}/32`, 'dev', 'lo', 'proto', String(L2_ROUTE_PROTO)]);
      const neigh = route.code === 0 ? await this.ip(['neigh', 'replace', 'proxy', ip, 'dev', row.dev]) : route;
      if (neigh.code !== 0) {
        failures.push({ key: ip, error: new Error(`announcing ${ip} on ${row.dev}: ${neigh.stderr.trim() || `exit ${neigh.code}`}`) });
        continue;
      }
      if (this.options.gratuitousArp !== false) void this.announce(ip, row.dev);
    }
    return failures;
  }

  /** Gratuitous ARP (two unsolicited requests, 200 ms apart); a failure is logged, the announcement stays. */
  private async announce(ip: string, dev: string): Promise<void> {
    for (let i = 0; i < 2; i++) {
      const r = await this.exec('arping', ['-U', '-q', '-c', '1', '-w', '1', '-I', dev, '-s', ip, ip]);
      if (r.code !== 0 && r.code !== 1) {
        this.options.log.warn({ ip, dev, err: r.stderr.trim() || `exit ${r.code}` }, 'gratuitous ARP failed (is iputils-arping installed?)');
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }

  async delete(keys: readonly string[]): Promise<RowFailure[]> {
    const failures: RowFailure[] = [];
    const ours = new Set(await this.current());
    for (const ip of keys) {
      // The proxy entry first: stop answering before anything else.
      const neigh = await this.ip(['neigh', 'del', 'proxy', ip, 'dev', this.options.uplink]);
      const gone = neigh.code === 0 || /No such file|not found|Cannot assign/i.test(neigh.stderr);
      const route = ours.has(ip) ? await this.ip(['route', 'del', `${ip}/32`, 'dev', 'lo', 'proto', String(L2_ROUTE_PROTO)]) : { code: 0, stderr: '' };
      if (!gone || route.code !== 0) failures.push({ key: ip, error: new Error(`withdrawing ${ip}: ${(gone ? route.stderr : neigh.stderr).trim()}`) });
    }
    return failures;
  }

  async prune(desired: { get(key: string): L2Row | undefined; entries(): Iterable<readonly [string, L2Row]> }): Promise<PruneResult> {
    const present = await this.current();
    const stale = present.filter((ip) => !desired.get(ip));
    const failures = await this.delete(stale);
    const have = new Set(present);
    // A desired address whose route is there but whose proxy entry someone removed is drift too.
    const proxies = await this.ip(['-j', 'neigh', 'show', 'proxy', 'dev', this.options.uplink]);
    const proxied = new Set((JSON.parse(proxies.stdout || '[]') as Array<{ dst?: string }>).map((n) => n.dst));
    const outOfDate = [...desired.entries()].map(([ip]) => ip).filter((ip) => !have.has(ip) || !proxied.has(ip));
    return { outOfDate, pruned: stale.filter((ip) => !failures.some((f) => f.key === ip)), failures };
  }
}

export interface L2AnnouncerOptions {
  nodeName: string;
  client: Etcd3;
  keys: KeySchema;
  netns?: string;
  uplink: string;
  log: Logger;
  registry?: Registry;
  /** TTL of the lease the address keys live on. Default 2 s (failover after a crash within about that). */
  leaseTtlSeconds?: number;
  /** How often the uplink's carrier is checked besides `ip monitor link`'s events, ms. Default 2,000. */
  linkPollMs?: number;
  refreshIntervalMs?: number;
  gratuitousArp?: boolean;
}

export interface L2AnnouncerStatus {
  eligible: number;
  announcing: string[];
  uplinkUp: boolean;
  reconciler: ReconcilerStatus;
}

export interface L2Announcer {
  status(): L2AnnouncerStatus;
  /** Withdraws: removes every announced address and gives the leases back (a graceful stop). */
  stop(): Promise<void>;
}

export function startL2Announcer(options: L2AnnouncerOptions): L2Announcer {
  const { client, keys, nodeName, log: parentLog } = options;
  const log = parentLog.child({ subsystem: 'l2-announcer' });
  const table = new L2AnnouncementsTable(options.uplink, log);
  const target = new L2AnnounceTarget({ ...(options.netns ? { netns: options.netns } : {}), uplink: options.uplink, gratuitousArp: options.gratuitousArp ?? true, log });
  const reconciler = new Reconciler<L2Row>({ target, desired: table, log, ...(options.registry ? { registry: options.registry } : {}), refreshIntervalMs: options.refreshIntervalMs ?? 30_000, batchMs: 0, backoff: { minMs: 100, maxMs: 5_000 } });
  table.follow(reconciler);
  const registers = options.registry ? [options.registry] : [];
  const existing = options.registry?.getSingleMetric('sluice_agent_l2_takeovers_total');
  const takeovers = existing instanceof Counter ? existing : new Counter({ name: 'sluice_agent_l2_takeovers_total', help: 'Addresses this node started announcing (it won the lease)', registers });
  const holders = new Map<string, string>(); // ip → node holding its lease key
  let lease: Lease | undefined;
  let leaseId: Promise<string> | undefined;
  let stopped = false;
  const ttl = options.leaseTtlSeconds ?? 2;

  const currentLease = (): Promise<string> => {
    if (!leaseId) {
      const l = client.lease(ttl);
      lease = l;
      leaseId = l.grant();
      l.on('lost', (err: Error) => {
        if (lease !== l) return;
        // Availability first: the addresses stay announced (every node's datapath serves every address, so a second
        // announcer for a while is harmless, while none at all drops the traffic). Once etcd answers again this agent
        // takes the keys back on a new lease, or sees another node's key and withdraws.
        log.warn({ err: err.message, announcing: table.heldAddresses() }, 'L2 lease lost (etcd unreachable?); still announcing, taking the keys back on a new lease');
        lease = undefined;
        leaseId = undefined;
        void compete();
      });
      leaseId.catch(() => {
        if (lease === l) [lease, leaseId] = [undefined, undefined];
      });
    }
    return leaseId;
  };

  let competeError = '';
  let competing = false;
  let competeAgain = false;
  /** Tries to take every eligible address nobody holds, and gives back what this node holds but may not announce. */
  const compete = async (): Promise<void> => {
    if (stopped) return;
    if (competing) {
      competeAgain = true;
      return;
    }
    competing = true;
    try {
      do {
        competeAgain = false;
        const eligible = table.eligible();
        for (const ip of table.heldAddresses()) {
          if (eligible.has(ip)) continue;
          table.setHeld(ip, false);
          const id = await currentLease();
          await client.if(keys.l2Lease(ip), 'Lease', '==', id).then(client.delete().key(keys.l2Lease(ip))).commit();
          log.info({ ip }, 'withdrew an L2 announcement (no longer eligible)');
        }
        for (const ip of eligible.keys()) {
          // Held without a key (our lease expired while etcd was away): take it back, unless someone else did.
          if (holders.has(ip)) continue;
          const id = await currentLease();
          const key = keys.l2Lease(ip);
          const result = await client.if(key, 'Create', '==', 0).then(client.put(key).value(nodeName).lease(id)).commit();
          if (result.succeeded) {
            holders.set(ip, nodeName);
            if (!table.heldAddresses().includes(ip)) {
              table.setHeld(ip, true);
              takeovers.inc();
              log.info({ ip, service: eligible.get(ip)?.service }, 'announcing an address (won its lease)');
            }
          }
        }
      } while (competeAgain && !stopped);
      competeError = '';
    } catch (err) {
      // Once per distinct error, not once per retry (etcd down means a failure every second).
      const message = (err as Error).message;
      if (message !== competeError) log.warn({ err: message }, 'competing for L2 leases failed; retrying every second');
      competeError = message;
    } finally {
      competing = false;
    }
  };

  const watches: PrefixWatch[] = [];
  watches.push(
    watchPrefix<SlimL2Announcement>(client, keys.prefix('l2announcements'), {
      name: 'l2announcements',
      decode: (_key, bytes) => decodeSlimL2Announcement(bytes),
      onEvent: (e) => {
        if (e.type === 'listDone') return;
        const name = keys.parse('l2announcements', e.key)?.[0];
        if (!name) return;
        table.setPolicy(name, e.type === 'upsert' ? e.value : undefined, e.modRevision);
        void compete();
      },
      log,
      ...(options.registry ? { registry: options.registry } : {}),
    }),
  );
  // The exact key: a prefix watch of nodes/<name> would also see nodes/<name>-2.
  const nodeKey = keys.node(nodeName);
  watches.push(
    watchPrefix<SlimNode>(client, nodeKey, {
      name: 'l2-own-node',
      decode: (_key, bytes) => decodeSlim('node', bytes),
      onEvent: (e) => {
        if (e.type === 'listDone' || e.key !== nodeKey) return;
        table.setNodeLabels(e.type === 'upsert' ? e.value.labels : undefined, e.modRevision);
        void compete();
      },
      log,
      ...(options.registry ? { registry: options.registry } : {}),
    }),
  );
  watches.push(
    watchPrefix<string>(client, keys.prefix('l2leases'), {
      name: 'l2leases',
      decode: (_key, bytes) => bytes.toString('utf8'),
      onEvent: (e) => {
        if (e.type === 'listDone') return;
        const ip = keys.parse('l2leases', e.key)?.[0];
        if (!ip) return;
        if (e.type === 'upsert') {
          holders.set(ip, e.value);
          // Someone else holds it (ours expired while we were cut off from etcd): stop answering.
          if (e.value !== nodeName) table.setHeld(ip, false);
        } else {
          // Our own key going (our lease expired) keeps the announcement until compete() knows who holds it now.
          holders.delete(ip);
          void compete();
        }
      },
      log,
      ...(options.registry ? { registry: options.registry } : {}),
    }),
  );

  // Carrier on the uplink: a node whose link is down must not hold an address (its ARP answers go nowhere).
  let polling = false;
  const poll = async () => {
    if (polling || stopped) return;
    polling = true;
    try {
      const r = await run('ip', [...(options.netns ? ['-n', options.netns] : []), '-j', 'link', 'show', 'dev', options.uplink], { timeoutMs: 5_000 });
      if (r.code === 0) {
        const [link] = JSON.parse(r.stdout || '[]') as Array<{ flags?: string[]; operstate?: string }>;
        const up = !!link && (link.flags ?? []).includes('LOWER_UP') && (link.flags ?? []).includes('UP');
        if (up !== table.isUplinkUp) {
          log.info({ uplink: options.uplink, up }, up ? 'uplink has carrier: competing for L2 announcements' : 'uplink lost carrier: withdrawing L2 announcements');
          table.setUplinkUp(up);
          void compete();
        }
      }
    } finally {
      polling = false;
    }
  };
  // `ip monitor link` tells at once when the uplink changes; a slow poll covers a monitor that died.
  let monitor: ChildProcess | undefined;
  const startMonitor = () => {
    if (stopped) return;
    monitor = spawn('ip', [...(options.netns ? ['-n', options.netns] : []), 'monitor', 'link'], { stdio: ['ignore', 'pipe', 'ignore'] });
    monitor.stdout!.on('data', (chunk: Buffer) => {
      if (chunk.toString('utf8').includes(options.uplink)) void poll();
    });
    monitor.on('error', () => undefined);
    monitor.on('exit', () => {
      if (!stopped) setTimeout(startMonitor, 1_000).unref();
    });
  };
  startMonitor();
  const linkTimer = setInterval(() => void poll(), options.linkPollMs ?? 2_000);
  void poll();
  void reconciler.start();
  // Addresses nobody could take (etcd was unreachable) are retried.
  const retryTimer = setInterval(() => void compete(), 1_000);

  return {
    status: () => ({ eligible: table.eligible().size, announcing: [...table.entries()].map(([ip]) => ip).sort(), uplinkUp: table.isUplinkUp, reconciler: reconciler.status() }),
    async stop() {
      stopped = true;
      monitor?.kill();
      clearInterval(linkTimer);
      clearInterval(retryTimer);
      await Promise.all(watches.map((w) => w.stop()));
      for (const ip of table.heldAddresses()) table.setHeld(ip, false);
      await reconciler.stop();
      // Withdraw from the kernel first, then give the leases back: another node may answer only once we do not.
      await target.delete(await target.current().catch(() => []));
      await lease?.revoke().catch(() => undefined);
    },
  };
}
