/**
 * The node's local endpoints, persisted in the agent's state dir: only the CNI plugin knows a pod's ifindex and MACs,
 * so a restarted agent reads them back from here instead of losing (and flushing) them.
 *
 * Writes are coalesced: a change schedules one save and `saved()` resolves once a save that includes it is on disk,
 * so a burst of CNI calls costs a few writes, not one per call. Each save goes to a new temp file opened with O_EXCL
 * (never through a planted symlink) and is renamed over the state file. The state dir is created 0700 and must be
 * a real directory, not a symlink.
 */
import { chmodSync, lstatSync, mkdirSync, readFileSync } from 'node:fs';
import { open, rename, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
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
  /** The save in progress, and the one queued after it (which includes every change made meanwhile). */
  private saving: Promise<void> | undefined;
  private waiting: Promise<void> | undefined;
  /** Saves written so far (tests, metrics). */
  saves = 0;

  constructor(private readonly stateDir: string) {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    const st = lstatSync(stateDir);
    if (!st.isDirectory()) throw new Error(`state dir ${stateDir} is not a directory (a symlink?)`);
    if (st.uid === process.getuid?.() && (st.mode & 0o077) !== 0) chmodSync(stateDir, 0o700);
    this.path = join(stateDir, 'endpoints.json');
    let text: string | undefined;
    try {
      if (lstatSync(this.path).isSymbolicLink()) throw new Error(`${this.path} is a symlink; refusing to read it`);
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

  get size(): number {
    return this.endpoints.size;
  }

  all(): LocalEndpointRecord[] {
    return [...this.endpoints.values()];
  }

  get(id: string): LocalEndpointRecord | undefined {
    return this.endpoints.get(id);
  }

  /** Changes the endpoint in memory and schedules a save; `await saved()` before telling anyone it is persisted. */
  put(ep: LocalEndpointRecord): void {
    this.endpoints.set(ep.id, ep);
    this.markDirty();
  }

  delete(id: string): LocalEndpointRecord | undefined {
    const ep = this.endpoints.get(id);
    if (ep) {
      this.endpoints.delete(id);
      this.markDirty();
    }
    return ep;
  }

  /** Resolves once every change made so far is on disk. */
  saved(): Promise<void> {
    return this.waiting ?? this.saving ?? Promise.resolve();
  }

  private markDirty(): void {
    if (this.waiting) return; // the next save (queued) will include this change
    const next = (this.saving ?? Promise.resolve()).catch(() => undefined).then(() => {
      this.waiting = undefined;
      const current: Promise<void> = this.write().finally(() => {
        if (this.saving === current) this.saving = undefined;
      });
      this.saving = current;
      return current;
    });
    this.waiting = next;
  }

  private async write(): Promise<void> {
    const tmp = join(this.stateDir, `.endpoints.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
    const file = await open(tmp, 'wx', 0o600);
    try {
      await file.writeFile(JSON.stringify({ version: 1, endpoints: this.all() }));
      await file.sync();
    } catch (err) {
      await file.close();
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
    await file.close();
    await rename(tmp, this.path);
    this.saves++;
  }
}

export function toCoreEndpoint(ep: LocalEndpointRecord): LocalEndpoint {
  const { health: _health, ...rest } = ep;
  return rest;
}
