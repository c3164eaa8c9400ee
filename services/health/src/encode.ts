/**
 * A hand-written encoder for GetClusterHealthResponse, because at 5,000 nodes the generic one (protobufjs fromObject +
 * encode over ~35,000 nested messages) takes 100–300 ms per call. Here each node's NodeHealth is encoded once per
 * change of its view and kept; a response is the summary plus the concatenated cached node encodings. The wire format
 * is plain proto3 (fields with default values omitted, sub-messages always present); the tests decode it with the
 * generic decoder and compare.
 */
import type { AgentState, ClusterHealth, ClusterSummary, Connectivity, NodeHealth, ProbeStatus, Reachability } from '@sluice/health-api';

const REACHABILITY_NUMBER: Record<Reachability, number> = {
  REACHABILITY_UNSPECIFIED: 0,
  REACHABILITY_REACHABLE: 1,
  REACHABILITY_SUSPECT: 2,
  REACHABILITY_UNREACHABLE: 3,
  REACHABILITY_UNKNOWN: 4,
};

const AGENT_STATE_NUMBER: Record<AgentState, number> = {
  AGENT_STATE_UNSPECIFIED: 0,
  AGENT_STATE_RUNNING: 1,
  AGENT_STATE_NOT_RUNNING: 2,
  AGENT_STATE_UNKNOWN: 3,
};

const VARINT = 0;
const LENGTH_DELIMITED = 2;

/**
 * Writes into one growing scratch buffer. A sub-message reserves one byte for its length and moves its bytes along
 * in the rare case the length needs more (≥ 128 bytes), so nothing is encoded twice and nothing small is allocated.
 */
class Writer {
  private buf = Buffer.allocUnsafe(4096);
  private pos = 0;

  reset(): this {
    this.pos = 0;
    return this;
  }

  private ensure(extra: number): void {
    if (this.pos + extra <= this.buf.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + extra));
    this.buf.copy(bigger, 0, 0, this.pos);
    this.buf = bigger;
  }

  private varint(value: number): void {
    // Non-negative integers below 2^53 (the schemas guarantee it); division keeps precision past 2^32.
    this.ensure(8);
    let v = value;
    while (v > 127) {
      this.buf[this.pos++] = (v % 128) | 128;
      v = Math.floor(v / 128);
    }
    this.buf[this.pos++] = v;
  }

  uint(field: number, value: number): this {
    if (value !== 0) {
      this.varint(field * 8 + VARINT);
      this.varint(value);
    }
    return this;
  }

  bool(field: number, value: boolean): this {
    return this.uint(field, value ? 1 : 0);
  }

  string(field: number, value: string, always = false): this {
    if (value.length === 0 && !always) return this;
    this.varint(field * 8 + LENGTH_DELIMITED);
    // Names, IPs and most errors are short ASCII: copying the chars beats Buffer's UTF-8 machinery for them.
    if (value.length < 128) {
      this.ensure(value.length + 1);
      let ascii = true;
      for (let i = 0; i < value.length; i++) {
        const c = value.charCodeAt(i);
        if (c > 127) {
          ascii = false;
          break;
        }
        this.buf[this.pos + 1 + i] = c;
      }
      if (ascii) {
        this.buf[this.pos] = value.length;
        this.pos += 1 + value.length;
        return this;
      }
    }
    const length = Buffer.byteLength(value, 'utf8');
    this.varint(length);
    this.ensure(length);
    this.pos += this.buf.write(value, this.pos, 'utf8');
    return this;
  }

  raw(bytes: Uint8Array): this {
    this.ensure(bytes.length);
    this.buf.set(bytes, this.pos);
    this.pos += bytes.length;
    return this;
  }

  /** A length-delimited sub-message written by `body`. */
  message(field: number, body: (w: this) => void): this {
    this.varint(field * 8 + LENGTH_DELIMITED);
    this.ensure(1);
    const lengthAt = this.pos++;
    body(this);
    const length = this.pos - lengthAt - 1;
    if (length < 128) {
      this.buf[lengthAt] = length;
    } else {
      let extra = 0;
      for (let v = length; v > 127; v = Math.floor(v / 128)) extra++;
      this.ensure(extra);
      this.buf.copyWithin(lengthAt + 1 + extra, lengthAt + 1, this.pos);
      let v = length;
      let at = lengthAt;
      while (v > 127) {
        this.buf[at++] = (v % 128) | 128;
        v = Math.floor(v / 128);
      }
      this.buf[at] = v;
      this.pos += extra;
    }
    return this;
  }

  /** A copy of what was written since the last reset. */
  finish(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.pos));
  }
}

const probeStatus = (s: ProbeStatus) => (w: Writer) =>
  void w.bool(1, s.probed).bool(2, s.ok).uint(3, s.rttUs).string(4, s.error).uint(5, s.timeUnixMs).string(6, s.reporter);

const connectivity = (c: Connectivity) => (w: Writer) =>
  void w.string(1, c.ip).message(2, probeStatus(c.icmp)).message(3, probeStatus(c.http));

const nodeHealth = (n: NodeHealth) => (w: Writer) => {
  w.string(1, n.name)
    .uint(2, REACHABILITY_NUMBER[n.reachability])
    .message(3, connectivity(n.host))
    .message(4, connectivity(n.endpoint))
    .uint(5, n.lastProbeUnixMs)
    .uint(6, n.failingReporters)
    .uint(7, n.reporters)
    .uint(8, AGENT_STATE_NUMBER[n.agent])
    .uint(9, REACHABILITY_NUMBER[n.endpointReachability]);
  for (const reporter of n.unreachableFrom) w.string(10, reporter, true);
};

const scratch = new Writer();

/** A NodeHealth message's bytes. */
export function encodeNodeHealth(n: NodeHealth): Buffer {
  nodeHealth(n)(scratch.reset());
  return scratch.finish();
}

export function encodeSummary(s: ClusterSummary): Buffer {
  const w = scratch.reset().uint(1, s.reachable).uint(2, s.total).uint(3, s.probeTimeUnixMs);
  for (const name of s.unreachable) w.string(4, name, true);
  for (const name of s.unknown) w.string(5, name, true);
  w.uint(6, s.quorum);
  for (const name of s.endpointUnreachable) w.string(7, name, true);
  for (const name of s.agentNotRunning) w.string(8, name, true);
  for (const path of s.brokenPaths) w.string(9, path, true);
  return w.finish();
}

/** A GetClusterHealthResponse entry of field 2 (repeated NodeHealth): tag, length, NodeHealth. */
function nodeEntry(node: NodeHealth): Buffer {
  scratch.reset().message(2, nodeHealth(node));
  return scratch.finish();
}

/** Keeps each node's encoded entry for as long as its view object is the same (the aggregator replaces it on change). */
export class ClusterHealthEncoder {
  private readonly cache = new WeakMap<NodeHealth, Buffer>();

  encode(health: ClusterHealth): Buffer {
    return this.assemble(health.summary, health.nodes.map((node) => this.entry(node)));
  }

  /** The per-node entries of an answer, in order, for a later `assemble` that replaces only some of them. */
  entries(nodes: readonly NodeHealth[]): Buffer[] {
    return nodes.map((node) => this.entry(node));
  }

  /** An answer from a summary and already encoded node entries. */
  assemble(summary: ClusterSummary, entries: readonly Buffer[]): Buffer {
    const encodedSummary = encodeSummary(summary);
    return Buffer.concat([scratch.reset().message(1, (w) => void w.raw(encodedSummary)).finish(), ...entries]);
  }

  /** Encodes `nodes[from, to)` ahead of a later encode(), so that the work can be spread over event-loop turns. */
  prepare(nodes: readonly NodeHealth[], from: number, to: number): void {
    for (let i = from; i < Math.min(to, nodes.length); i++) this.entry(nodes[i]!);
  }

  entry(node: NodeHealth): Buffer {
    let entry = this.cache.get(node);
    if (!entry) {
      entry = nodeEntry(node);
      this.cache.set(node, entry);
    }
    return entry;
  }
}
