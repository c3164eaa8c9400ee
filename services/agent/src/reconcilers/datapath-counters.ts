/**
 * The programs' per-decision counters (sl_counters, summed over CPUs) as Prometheus counters, read at scrape time:
 * sluice_datapath_packets_total / sluice_datapath_bytes_total{decision="<counter>"} — among them the masquerade's
 * drops (snatNoPort: no NAT port free, snatUnsupported: a packet it cannot translate) and ttlExceeded.
 */
import type { CounterName } from '@sluice/bpf';
import type { Datapath } from '@sluice/datapath';
import { Counter, type Registry } from '@sluice/metrics';

export function registerDatapathCounters(registry: Registry, datapath: Pick<Datapath, 'readCounters'>): void {
  if (registry.getSingleMetric('sluice_datapath_packets_total')) return; // one datapath per registry
  let cached: { at: number; values: ReturnType<Datapath['readCounters']> } | undefined;
  // One read of the map serves both metrics of a scrape.
  const read = () => {
    const now = Date.now();
    if (!cached || now - cached.at > 500) cached = { at: now, values: datapath.readCounters() };
    return cached.values;
  };
  const make = (name: string, help: string, field: 'packets' | 'bytes') =>
    new Counter({
      name,
      help,
      labelNames: ['decision'],
      registers: [registry],
      collect() {
        this.reset();
        for (const [decision, c] of Object.entries(read()) as Array<[CounterName, { packets: bigint; bytes: bigint }]>) this.inc({ decision }, Number(c[field]));
      },
    });
  make('sluice_datapath_packets_total', 'Packets by the BPF programs\' decision (sl_counters): forwarded, passed, masqueraded, dropped (snatNoPort, snatUnsupported, dropSpoofed, dropMalformed), ttlExceeded, …', 'packets');
  make('sluice_datapath_bytes_total', 'Bytes by the BPF programs\' decision (sl_counters)', 'bytes');
}
