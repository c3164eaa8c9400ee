/**
 * Garbage collection of the BPF masquerade's NAT table (sl_snat and sl_snat_rev, plain hash maps: the kernel never
 * evicts from them, so only this removes entries, and always a flow's two halves together).
 *
 * A flow is done once both directions have been idle past its lifetime (bpf/include/sluice_maps.h: TCP 6 h, a TCP
 * flow that saw FIN or RST 10 s, UDP 60 s, ICMP echo 30 s). A reverse entry whose forward half is missing or maps
 * elsewhere is an orphan (a program's insert that failed halfway, an agent that wrote one by hand): it goes once it
 * too has been idle a closing lifetime, so a flow whose first packet is being mapped right now is never touched.
 */
import { SNAT_F_CLOSING, SNAT_LIFETIME, type SnatKey, type SnatValue } from '@sluice/bpf';
import type { Datapath } from '@sluice/datapath';
import type { Logger } from '@sluice/log';
import { Counter, type Registry } from '@sluice/metrics';
import { monotonicSeconds } from './services.ts';

type SnatMaps = Pick<Datapath['maps'], 'snat' | 'snatRev'>;

/** Seconds the programs' u32 clock has moved past `then` (signed, as it may wrap). */
const idle = (now: number, then: number) => (now - then) | 0;

function lifetime(key: SnatKey, closing: boolean): number {
  if (key.proto === 'icmp') return SNAT_LIFETIME.icmp;
  if (key.proto === 'udp') return SNAT_LIFETIME.udp;
  return closing ? SNAT_LIFETIME.closing : SNAT_LIFETIME.tcp;
}

const reverseOf = (k: SnatKey, v: SnatValue): SnatKey => ({ addr: v.addr, port: v.port, peerIp: k.peerIp, peerPort: k.peerPort, proto: k.proto });

export interface SnatCollected {
  /** Flows whose mapping (both halves) was removed. */
  flows: number;
  /** Reverse entries without their forward half, removed. */
  orphans: number;
}

/** One pass over the NAT table at `now` (CLOCK_MONOTONIC seconds, the programs' clock). */
export function collectSnat(maps: { snat: SnatMaps['snat']; snatRev: SnatMaps['snatRev'] }, now = monotonicSeconds()): SnatCollected {
  const forward: SnatKey[] = [];
  const reverse: SnatKey[] = [];
  const live = new Set<string>();
  const going = new Set<string>();
  const id = (k: SnatKey) => `${k.addr}:${k.port}/${k.peerIp}:${k.peerPort}/${k.proto}`;
  for (const [k, v] of maps.snat.entries()) {
    const rk = reverseOf(k, v);
    const rv = maps.snatRev.lookup(rk);
    const pointsBack = rv !== undefined && rv.addr === k.addr && rv.port === k.port;
    const closing = ((v.flags ?? 0) | (pointsBack ? (rv.flags ?? 0) : 0)) & SNAT_F_CLOSING;
    const quiet = Math.min(idle(now, v.lastSeen ?? 0), pointsBack ? idle(now, rv.lastSeen ?? 0) : Infinity);
    if (quiet <= lifetime(k, closing !== 0)) {
      if (pointsBack) live.add(id(rk));
      continue;
    }
    forward.push(k);
    if (pointsBack) {
      reverse.push(rk);
      going.add(id(rk));
    }
  }
  let orphans = 0;
  for (const [k, v] of maps.snatRev.entries()) {
    if (live.has(id(k)) || going.has(id(k))) continue;
    const fwd = maps.snat.lookup({ addr: v.addr, port: v.port, peerIp: k.peerIp, peerPort: k.peerPort, proto: k.proto });
    if (fwd && fwd.addr === k.addr && fwd.port === k.port) continue; // its flow is live (seen after the first loop)
    if (idle(now, v.lastSeen ?? 0) <= SNAT_LIFETIME.closing) continue;
    reverse.push(k);
    orphans++;
  }
  maps.snat.deleteBatch(forward);
  maps.snatRev.deleteBatch(reverse);
  return { flows: forward.length, orphans };
}

export interface SnatGcOptions {
  maps: SnatMaps;
  log: Logger;
  registry?: Registry;
  /** ms between passes; default 30 s. */
  intervalMs?: number;
}

/** Runs collectSnat every interval until stopped; failures logged once until a pass succeeds again. */
export function startSnatGc(options: SnatGcOptions): { stop(): void } {
  const removed = options.registry
    ? new Counter({ name: 'sluice_agent_snat_gc_removed_total', help: 'BPF masquerade NAT mappings removed by garbage collection: flows idle past their lifetime (kind=flow), reverse halves without their forward half (kind=orphan)', labelNames: ['kind'], registers: [options.registry] })
    : undefined;
  let failing = false;
  const timer = setInterval(() => {
    try {
      const r = collectSnat(options.maps);
      if (r.flows) removed?.inc({ kind: 'flow' }, r.flows);
      if (r.orphans) removed?.inc({ kind: 'orphan' }, r.orphans);
      failing = false;
    } catch (err) {
      if (!failing) options.log.warn({ error: (err as Error).message }, 'masquerade NAT table garbage collection failed');
      failing = true;
    }
  }, options.intervalMs ?? 30_000);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
