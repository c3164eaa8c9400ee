/**
 * The node's local endpoints, persisted in the agent's state dir: only the CNI plugin knows a pod's ifindex and MACs,
 * so a restarted agent reads them back from here instead of losing (and flushing) them. Written atomically (temp
 * file + rename) on every change; a few hundred pods per node make that cheap.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import type { LocalEndpoint } from './core.ts';

const mac = z.string().regex(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i, 'is not a MAC address');
export const localEndpointSchema = z.strictObject({
  id: z.string().min(1).max(256),
  ip: z.ipv4(),
  hostIfname: z.string().min(1).max(15),
  hostIfindex: z.number().int().positive(),
  hostMac: mac,
  mac,
  podNamespace: z.string().optional(),
  podName: z.string().optional(),
  /** The node's health endpoint (cilium-health style), not a pod. */
  health: z.boolean().optional(),
});
export type LocalEndpointRecord = z.infer<typeof localEndpointSchema>;

const fileSchema = z.strictObject({ version: z.literal(1), endpoints: z.array(localEndpointSchema) });

export class LocalEndpointStore {
  private readonly path: string;
  private readonly endpoints = new Map<string, LocalEndpointRecord>();

  constructor(stateDir: string) {
    mkdirSync(stateDir, { recursive: true });
    this.path = join(stateDir, 'endpoints.json');
    let text: string | undefined;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (text !== undefined) {
      const parsed = fileSchema.safeParse(JSON.parse(text));
      if (!parsed.success) throw new Error(`${this.path}: not a valid endpoint state file (${parsed.error.issues[0]?.message})`);
      for (const ep of parsed.data.endpoints) this.endpoints.set(ep.id, ep);
    }
  }

  all(): LocalEndpointRecord[] {
    return [...this.endpoints.values()];
  }

  get(id: string): LocalEndpointRecord | undefined {
    return this.endpoints.get(id);
  }

  put(ep: LocalEndpointRecord): void {
    this.endpoints.set(ep.id, ep);
    this.save();
  }

  delete(id: string): LocalEndpointRecord | undefined {
    const ep = this.endpoints.get(id);
    if (ep) {
      this.endpoints.delete(id);
      this.save();
    }
    return ep;
  }

  private save(): void {
    const tmp = `${this.path}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify({ version: 1, endpoints: this.all() }));
    renameSync(tmp, this.path);
  }
}

export function toCoreEndpoint(ep: LocalEndpointRecord): LocalEndpoint {
  const { health: _health, ...rest } = ep;
  return rest;
}
