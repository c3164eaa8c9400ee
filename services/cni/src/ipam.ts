/**
 * Host-local style IPAM: addresses of the node's podCIDR handed out from a persistent allocation file, under a lock
 * (concurrent plugin runs on one node), never the same address twice while it is allocated. The first two addresses
 * (network, .1) and the broadcast address are never handed out. Allocation is by (container id, ifname), so a retried
 * ADD gets the same address back and DEL releases exactly it.
 */
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import ipaddr from 'ipaddr.js';
import { z } from 'zod';

const fileSchema = z.strictObject({
  subnet: z.string(),
  /** Where the next search starts (round robin: a released address is not reused at once). */
  cursor: z.number().int(),
  allocations: z.record(z.string(), z.strictObject({ ip: z.string(), containerId: z.string(), ifname: z.string() })),
});
type AllocationFile = z.infer<typeof fileSchema>;

export class IpamError extends Error {}

function toInt(ip: string): number {
  return ipaddr.IPv4.parse(ip).toByteArray().reduce((a, b) => a * 256 + b, 0);
}
function toIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export class HostLocalIpam {
  private readonly file: string;
  private readonly lockDir: string;

  constructor(private readonly dataDir: string, private readonly subnet: string) {
    mkdirSync(dataDir, { recursive: true });
    this.file = join(dataDir, 'allocations.json');
    this.lockDir = join(dataDir, 'lock');
    try {
      const [addr, bits] = ipaddr.parseCIDR(subnet);
      if (addr.kind() !== 'ipv4' || bits > 30) throw new Error('need an IPv4 subnet of /30 or larger');
    } catch (err) {
      throw new IpamError(`invalid subnet ${JSON.stringify(subnet)}: ${(err as Error).message}`);
    }
  }

  /** Runs fn holding the allocation lock (a directory: mkdir is atomic; a dead holder's lock is broken). */
  private async locked<T>(fn: () => T): Promise<T> {
    const deadline = Date.now() + 15_000;
    for (;;) {
      try {
        mkdirSync(this.lockDir);
        writeFileSync(join(this.lockDir, 'pid'), String(process.pid));
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        let holder = NaN;
        try {
          holder = Number(readFileSync(join(this.lockDir, 'pid'), 'utf8'));
        } catch {
          // being created or removed right now
        }
        if (Number.isInteger(holder) && holder > 0 && !alive(holder)) rmSync(this.lockDir, { recursive: true, force: true });
        if (Date.now() > deadline) throw new IpamError(`timed out waiting for the IPAM lock ${this.lockDir}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    try {
      return fn();
    } finally {
      rmSync(this.lockDir, { recursive: true, force: true });
    }
  }

  private read(): AllocationFile {
    try {
      const parsed = fileSchema.parse(JSON.parse(readFileSync(this.file, 'utf8')));
      if (parsed.subnet !== this.subnet) throw new IpamError(`allocation file ${this.file} is for subnet ${parsed.subnet}, not ${this.subnet}`);
      return parsed;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { subnet: this.subnet, cursor: 0, allocations: {} };
      throw err;
    }
  }

  private write(state: AllocationFile): void {
    const tmp = `${this.file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(state));
    renameSync(tmp, this.file);
  }

  allocate(containerId: string, ifname: string, wanted?: string): Promise<string> {
    return this.locked(() => {
      const state = this.read();
      const id = `${containerId}/${ifname}`;
      const existing = state.allocations[id];
      if (existing) return existing.ip;
      const used = new Set(Object.values(state.allocations).map((a) => a.ip));
      const [net, bits] = ipaddr.parseCIDR(this.subnet);
      const base = toInt(net.toString()) & ~(2 ** (32 - bits) - 1);
      const size = 2 ** (32 - bits);
      let ip: string | undefined;
      if (wanted) {
        if (used.has(wanted)) throw new IpamError(`requested IP ${wanted} is already allocated`);
        const off = toInt(wanted) - base;
        if (off < 2 || off >= size - 1) throw new IpamError(`requested IP ${wanted} is not usable in ${this.subnet}`);
        ip = wanted;
      } else {
        for (let i = 0; i < size; i++) {
          const off = 2 + ((state.cursor + i) % (size - 3));
          const candidate = toIp(base + off);
          if (!used.has(candidate)) {
            ip = candidate;
            state.cursor = off - 1;
            break;
          }
        }
      }
      if (!ip) throw new IpamError(`no free address left in ${this.subnet}`);
      state.allocations[id] = { ip, containerId, ifname };
      this.write(state);
      return ip;
    });
  }

  get(containerId: string, ifname: string): Promise<string | undefined> {
    return this.locked(() => this.read().allocations[`${containerId}/${ifname}`]?.ip);
  }

  release(containerId: string, ifname: string): Promise<string | undefined> {
    return this.locked(() => {
      const state = this.read();
      const id = `${containerId}/${ifname}`;
      const ip = state.allocations[id]?.ip;
      if (ip) {
        delete state.allocations[id];
        this.write(state);
      }
      return ip;
    });
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
