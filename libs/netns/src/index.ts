/**
 * Network namespaces and links for tests and the lab, through iproute2. Everything made through a `NetLab` is
 * recorded in its cleanup registry and removed by `cleanup()` (and, as a last resort, at process exit), newest first;
 * nothing it did not make is ever touched. Namespace and link names must start with `sl-` (links inside our own
 * namespaces may use any name, since deleting the namespace removes them); Linux ifnames are at most 15 chars.
 *
 * Commands run inside a namespace with `nsenter --net=/run/netns/<name>`, never `ip netns exec`, which remounts
 * /sys and hides the bpffs.
 */
import { execFile, execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';

export const PREFIX = 'sl-';
export const IFNAMSIZ = 15;

export class NetnsError extends Error {
  override name = 'NetnsError';
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number;
}

/** Runs a command, resolving with its output and exit code (never rejects on a non-zero exit). */
export function run(cmd: string, args: readonly string[], options: { timeoutMs?: number; input?: string } = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { timeout: options.timeoutMs ?? 30_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err && typeof (err as NodeJS.ErrnoException).code === 'string') return reject(err);
      const code = err ? ((err as { code?: number }).code ?? 1) : 0;
      resolve({ stdout, stderr, code: typeof code === 'number' ? code : 1 });
    });
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

/** Like run(), but a non-zero exit is a NetnsError carrying the command and its stderr. */
export async function must(cmd: string, args: readonly string[], options: { timeoutMs?: number; input?: string } = {}): Promise<string> {
  const r = await run(cmd, args, options);
  if (r.code !== 0) throw new NetnsError(`${cmd} ${args.join(' ')}: exit ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}

/** A short random id for unique names: `sl-${shortId()}-n1` stays well inside 15 chars. */
export function shortId(length = 4): string {
  return randomBytes(8).toString('hex').slice(0, length);
}

export function checkIfname(name: string): string {
  if (name.length > IFNAMSIZ || !/^[A-Za-z0-9_.-]+$/.test(name)) throw new NetnsError(`invalid interface name ${JSON.stringify(name)} (at most ${IFNAMSIZ} chars)`);
  return name;
}

function checkOwnName(name: string, what: string): string {
  if (!name.startsWith(PREFIX)) throw new NetnsError(`${what} ${JSON.stringify(name)} must start with ${PREFIX}`);
  return name;
}

export function netnsPath(name: string): string {
  return `/run/netns/${name}`;
}

/** `ip` in a namespace (or the current one when ns is undefined). */
export function ip(ns: string | undefined, args: readonly string[]): Promise<string> {
  return must('ip', ns ? ['-n', ns, ...args] : args);
}

/** argv that runs `cmd` inside namespace `ns`. */
export function nsenterArgs(ns: string, cmd: string, args: readonly string[] = []): [string, string[]] {
  return ['nsenter', [`--net=${netnsPath(ns)}`, '--', cmd, ...args]];
}

/** Runs a command in a namespace and waits for it. */
export function execIn(ns: string, cmd: string, args: readonly string[] = [], options: { timeoutMs?: number; input?: string } = {}): Promise<ExecResult> {
  const [c, a] = nsenterArgs(ns, cmd, args);
  return run(c, a, options);
}

export interface LinkInfo {
  ifname: string;
  ifindex: number;
  mac: string;
  mtu: number;
  up: boolean;
}

export async function linkInfo(ns: string | undefined, dev: string): Promise<LinkInfo> {
  const out = await ip(ns, ['-j', 'link', 'show', 'dev', dev]);
  const [link] = JSON.parse(out) as Array<{ ifname: string; ifindex: number; address: string; mtu: number; flags: string[] }>;
  if (!link) throw new NetnsError(`no link ${dev} in ${ns ?? 'current namespace'}`);
  return { ifname: link.ifname, ifindex: link.ifindex, mac: link.address, mtu: link.mtu, up: link.flags.includes('UP') };
}

type Undo = { what: string; sync: () => void };

/**
 * Builds test networks and remembers how to undo each step. `cleanup()` undoes everything (ignoring what is already
 * gone) and is safe to call more than once; it also runs on process exit if a test forgot or crashed.
 */
export class NetLab {
  private readonly undo: Undo[] = [];
  private readonly onExit = () => this.cleanupSync();
  /** Unique per lab, for names: `${lab.id}`. */
  readonly id: string;

  constructor(id = shortId()) {
    this.id = id;
    process.once('exit', this.onExit);
  }

  /** A name `sl-<id>-<suffix>` checked against the 15-char limit when used for links. */
  name(suffix: string): string {
    return `${PREFIX}${this.id}-${suffix}`;
  }

  async addNetns(name: string, options: { loopbackUp?: boolean; forwarding?: boolean } = {}): Promise<string> {
    checkOwnName(name, 'network namespace');
    await must('ip', ['netns', 'add', name]);
    this.undo.push({ what: `netns ${name}`, sync: () => void execFileSync('ip', ['netns', 'delete', name], { stdio: 'ignore' }) });
    if (options.loopbackUp ?? true) await ip(name, ['link', 'set', 'lo', 'up']);
    if (options.forwarding) await this.sysctl(name, 'net.ipv4.ip_forward', '1');
    return name;
  }

  /**
   * A veth pair: `a` in namespace `aNs`, `b` in `bNs` (undefined = the current namespace, where the name must start
   * with sl-). Both ends are brought up.
   */
  async addVeth(a: { ns?: string; name: string; mac?: string; mtu?: number }, b: { ns?: string; name: string; mac?: string; mtu?: number }): Promise<void> {
    checkIfname(a.name);
    checkIfname(b.name);
    if (!a.ns) checkOwnName(a.name, 'link in the current namespace');
    if (!b.ns) checkOwnName(b.name, 'link in the current namespace');
    const args = ['link', 'add', a.name];
    if (a.mac) args.push('address', a.mac);
    if (a.mtu) args.push('mtu', String(a.mtu));
    args.push('type', 'veth', 'peer', 'name', b.name);
    if (b.mac) args.push('address', b.mac);
    if (b.mtu) args.push('mtu', String(b.mtu));
    if (b.ns) args.push('netns', b.ns);
    await ip(a.ns, args);
    if (!a.ns) this.undo.push({ what: `link ${a.name}`, sync: () => void execFileSync('ip', ['link', 'delete', a.name], { stdio: 'ignore' }) });
    else if (!b.ns) this.undo.push({ what: `link ${b.name}`, sync: () => void execFileSync('ip', ['link', 'delete', b.name], { stdio: 'ignore' }) });
    await this.up(a.ns, a.name);
    await this.up(b.ns, b.name);
  }

  async addBridge(ns: string, name: string, options: { mtu?: number } = {}): Promise<void> {
    checkIfname(name);
    await ip(ns, ['link', 'add', name, ...(options.mtu ? ['mtu', String(options.mtu)] : []), 'type', 'bridge']);
    await this.up(ns, name);
  }

  async setMaster(ns: string | undefined, dev: string, bridge: string): Promise<void> {
    await ip(ns, ['link', 'set', dev, 'master', bridge]);
  }

  /** A collect_md ("external") VXLAN device, the kind bpf_skb_set_tunnel_key drives. */
  async addVxlan(ns: string, name: string, options: { dstPort?: number; mac?: string; mtu?: number; noArp?: boolean } = {}): Promise<void> {
    checkIfname(name);
    const args = ['link', 'add', name];
    if (options.mac) args.push('address', options.mac);
    if (options.mtu) args.push('mtu', String(options.mtu));
    args.push('type', 'vxlan', 'external', 'dstport', String(options.dstPort ?? 8472));
    await ip(ns, args);
    if (options.noArp ?? true) await ip(ns, ['link', 'set', name, 'arp', 'off']);
    await this.up(ns, name);
  }

  async up(ns: string | undefined, dev: string): Promise<void> {
    await ip(ns, ['link', 'set', dev, 'up']);
  }

  async addAddr(ns: string, dev: string, cidr: string): Promise<void> {
    await ip(ns, ['addr', 'add', cidr, 'dev', dev]);
  }

  /** `ip route replace <args>` in a namespace we made. */
  async route(ns: string, args: readonly string[]): Promise<void> {
    checkOwnName(ns, 'network namespace');
    await ip(ns, ['route', 'replace', ...args]);
  }

  async neigh(ns: string, addr: string, mac: string, dev: string): Promise<void> {
    checkOwnName(ns, 'network namespace');
    await ip(ns, ['neigh', 'replace', addr, 'lladdr', mac, 'dev', dev, 'nud', 'permanent']);
  }

  async sysctl(ns: string, key: string, value: string): Promise<void> {
    checkOwnName(ns, 'network namespace');
    await must(...nsenterArgs(ns, 'sysctl', ['-q', '-w', `${key}=${value}`]));
  }

  exec(ns: string, cmd: string, args: readonly string[] = [], options: { timeoutMs?: number; input?: string } = {}): Promise<ExecResult> {
    return execIn(ns, cmd, args, options);
  }

  /** A long-running process in a namespace; killed by cleanup() if still running. */
  spawnIn(ns: string, cmd: string, args: readonly string[] = [], options: SpawnOptions = {}): ChildProcess {
    const [c, a] = nsenterArgs(ns, cmd, args);
    const child = spawn(c, a, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
    this.undo.push({
      what: `process ${child.pid}`,
      sync: () => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      },
    });
    return child;
  }

  /** Registers a bpffs directory (e.g. a node's pins) for removal. */
  trackPinDir(dir: string): string {
    if (!dir.startsWith('/sys/fs/bpf/sluice/')) throw new NetnsError(`pin dir ${dir} must be under /sys/fs/bpf/sluice/`);
    this.undo.push({ what: `pins ${dir}`, sync: () => rmSync(dir, { recursive: true, force: true }) });
    return dir;
  }

  /** Registers any other undo step. */
  defer(what: string, fn: () => void): void {
    this.undo.push({ what, sync: fn });
  }

  /** Undoes everything, newest first; returns what could not be undone (already-gone things are not failures). */
  async cleanup(): Promise<string[]> {
    return this.cleanupSync();
  }

  cleanupSync(): string[] {
    const failures: string[] = [];
    while (this.undo.length) {
      const step = this.undo.pop()!;
      try {
        step.sync();
      } catch (err) {
        const msg = String((err as Error).message);
        if (!/No such|Cannot find|does not exist|ENOENT/.test(msg) && !this.gone(step.what)) failures.push(`${step.what}: ${msg}`);
      }
    }
    process.removeListener('exit', this.onExit);
    return failures;
  }

  private gone(what: string): boolean {
    if (what.startsWith('netns ')) {
      try {
        return !execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').some((l) => l.split(' ')[0] === what.slice(6));
      } catch {
        return false;
      }
    }
    return true;
  }
}

/** Pings `dst` from namespace `ns`; true when every probe was answered. */
export async function ping(ns: string, dst: string, options: { count?: number; timeoutS?: number; intervalS?: number } = {}): Promise<boolean> {
  const r = await execIn(ns, 'ping', ['-n', '-q', '-c', String(options.count ?? 2), '-i', String(options.intervalS ?? 0.2), '-W', String(options.timeoutS ?? 2), dst], {
    timeoutMs: 30_000,
  });
  return r.code === 0;
}
