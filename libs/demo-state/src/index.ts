/**
 * The demo's state file: `npm start` writes where everything it started lives, the `sluice` CLI reads it to find the
 * demo. One schema for both sides, so that a field the demo renames breaks the type check, not a user's terminal.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join, parse, resolve } from 'node:path';
import { z } from 'zod';

export const DEMO_STATE_ENV = 'SLUICE_DEMO_STATE';
export const STATE_DIR = '.sluice';
export const STATE_FILE = 'demo.json';

const url = z.string().regex(/^https?:\/\/[^\s/]+(\/\S*)?$/, 'expected an http(s) URL');
const ipv4 = z.string().regex(/^(\d{1,3}\.){3}\d{1,3}$/, 'expected an IPv4 address');
const pid = z.number().int().positive();

export const demoNodeSchema = z.object({
  name: z.string().min(1),
  nodeIP: ipv4,
  /** The node's network namespace (the lab's stand-in for a machine). */
  netns: z.string().min(1),
  /** Where the node's agent pins its BPF maps. */
  pinDir: z.string().min(1),
  agentStatusUrl: url.optional(),
  agentPid: pid.optional(),
  healthEndpointIP: ipv4.optional(),
});
export type DemoNode = z.infer<typeof demoNodeSchema>;

export const demoPodSchema = z.object({
  name: z.string().min(1),
  namespace: z.string().min(1),
  ip: ipv4,
  /** The pod's network namespace, entered with `nsenter --net=/run/netns/<netns>`. */
  netns: z.string().min(1),
  node: z.string().min(1),
  /** The port of the small web server the pod runs. */
  port: z.number().int().min(1).max(65535),
});
export type DemoPod = z.infer<typeof demoPodSchema>;

export const demoStateSchema = z.object({
  version: z.literal(1),
  /** `starting` while parts come up (the file doubles as the lock against a second demo), then `ready`. */
  phase: z.enum(['starting', 'ready']),
  pid,
  startedAt: z.string(),
  /** Absent only while starting. */
  /** With TLS (the demo's default): the CA to trust and a client certificate the CLI may read with. */
  etcd: z.object({ endpoints: z.array(url).min(1), pid: pid.optional(), ca: z.string().min(1).optional(), cert: z.string().min(1).optional(), key: z.string().min(1).optional() }).optional(),
  kubernetes: z.object({ server: url, kubeconfig: z.string().min(1), statsUrl: url.optional() }).optional(),
  operator: z.object({ metricsUrl: url, statusUrl: url, pid: pid.optional() }).optional(),
  health: z.object({ address: z.string().min(1), statusUrl: url.optional(), pid: pid.optional() }).optional(),
  /** The bpffs directory under which every node's pins live (removed on stop). */
  pinRoot: z.string().optional(),
  /** Why the lab is missing, when it is (e.g. not root, no agent yet). */
  labError: z.string().optional(),
  nodes: z.array(demoNodeSchema).default([]),
  pods: z.array(demoPodSchema).default([]),
  simNodes: z.number().int().min(0).default(0),
  /** Every process the demo started, for a later demo to clean up after one that was killed. */
  processes: z.array(z.object({ name: z.string(), pid })).default([]),
  /** Network namespaces the demo made, same reason. */
  namespaces: z.array(z.string()).default([]),
  /** Every namespace the lab makes starts with this (`sl-<lab id>-`): covers those made before the list was saved. */
  namespacePrefix: z.string().regex(/^sl-/, 'must start with sl-').optional(),
  /** Scratch directories of the demo's parts (the lab's agent state and logs), removed on stop. */
  tempDirs: z.array(z.string()).default([]),
});
export type DemoState = z.infer<typeof demoStateSchema>;
export type DemoStateInput = z.input<typeof demoStateSchema>;

export class DemoStateError extends Error {
  override name = 'DemoStateError';
  constructor(
    message: string,
    readonly reason: 'missing' | 'invalid' | 'stale' | 'starting',
  ) {
    super(message);
  }
}

/** The directory holding the repository (the first one up from `from` with a .git or a workspaces package.json). */
export function findRepoRoot(from = process.cwd()): string | undefined {
  let dir = resolve(from);
  for (;;) {
    if (existsSync(join(dir, '.git'))) return dir;
    if (dir === parse(dir).root) return undefined;
    dir = dirname(dir);
  }
}

/**
 * Where the state file is: $SLUICE_DEMO_STATE if set; else the first `.sluice/demo.json` found walking up from `from`
 * (stopping at the repository root); else where the demo would write it (the repository root's, or from's).
 */
export function demoStatePath(from = process.cwd(), env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env[DEMO_STATE_ENV];
  if (fromEnv) return resolve(fromEnv);
  const root = findRepoRoot(from);
  let dir = resolve(from);
  for (;;) {
    const candidate = join(dir, STATE_DIR, STATE_FILE);
    if (existsSync(candidate)) return candidate;
    if (dir === root || dir === parse(dir).root) break;
    dir = dirname(dir);
  }
  return join(root ?? resolve(from), STATE_DIR, STATE_FILE);
}

/** Whether a process with this pid exists (signal 0 checks without sending anything). */
export function pidAlive(p: number): boolean {
  try {
    process.kill(p, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function parseDemoState(text: string, path: string): DemoState {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new DemoStateError(`${path} is not valid JSON; remove it and start the demo again with npm start`, 'invalid');
  }
  const result = demoStateSchema.safeParse(json);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new DemoStateError(`${path} is not a demo state file this version understands (${issue.path.join('.') || 'root'}: ${issue.message}); restart the demo`, 'invalid');
  }
  return result.data;
}

/** Reads the state without judging it (for the demo's own lock check). Undefined when there is no file. */
export async function readDemoStateFile(path: string): Promise<DemoState | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new DemoStateError(`cannot read ${path}: ${(err as Error).message}`, 'invalid');
  }
  return parseDemoState(text, path);
}

/** Reads the state of a running, ready demo; every other case is a DemoStateError with a one-line, actionable message. */
export async function loadDemoState(path = demoStatePath(), options: { allowStarting?: boolean } = {}): Promise<ReadyDemoState> {
  const state = await readDemoStateFile(path);
  if (!state) throw new DemoStateError(`no demo running: ${path} not found; start one with npm start, or pass --etcd-endpoints`, 'missing');
  if (!pidAlive(state.pid)) {
    throw new DemoStateError(`no demo running: ${path} was left by demo pid ${state.pid}, which is gone; start one with npm start`, 'stale');
  }
  if (state.phase === 'starting' && !options.allowStarting) {
    throw new DemoStateError(`the demo (pid ${state.pid}) is still starting; try again in a few seconds`, 'starting');
  }
  if (!state.etcd) throw new DemoStateError(`${path} names no etcd yet; try again in a few seconds`, 'starting');
  return state as ReadyDemoState;
}

/** A ready demo's state: etcd is always known. */
export type ReadyDemoState = DemoState & { etcd: NonNullable<DemoState['etcd']> };

/**
 * Writes the state atomically (temp file + rename), so a reader never sees half a file. With `exclusive`, fails with
 * EEXIST when a file is already there: that is the demo's lock against a second instance.
 */
export async function writeDemoState(path: string, state: DemoStateInput, options: { exclusive?: boolean } = {}): Promise<DemoState> {
  const valid = demoStateSchema.parse(state);
  await mkdir(dirname(path), { recursive: true });
  const text = `${JSON.stringify(valid, null, 2)}\n`;
  if (options.exclusive) {
    await writeFile(path, text, { flag: 'wx' });
    return valid;
  }
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, text);
  await rename(tmp, path);
  return valid;
}

export async function removeDemoState(path: string): Promise<void> {
  await rm(path, { force: true });
}
