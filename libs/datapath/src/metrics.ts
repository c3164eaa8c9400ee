import { Counter, Gauge, Histogram, LATENCY_BUCKETS, type Registry } from '@sluice/metrics';

export interface MapMetrics {
  duration: Histogram<'map' | 'operation'>;
  errors: Counter<'map' | 'operation' | 'errno'>;
  full: Counter<'map'>;
  entries: Gauge<'map'>;
  capacity: Gauge<'map'>;
}

const cache = new WeakMap<Registry, MapMetrics>();

/** The BPF map metrics on `registry` (created once per registry, so several datapaths can share one). */
export function mapMetrics(registry: Registry): MapMetrics {
  const existing = cache.get(registry);
  if (existing) return existing;
  const metrics: MapMetrics = {
    duration: new Histogram({
      name: 'sluice_bpf_map_operation_duration_seconds',
      help: 'Duration of BPF map operations (batch update/delete, lookup, dump)',
      labelNames: ['map', 'operation'],
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    errors: new Counter({
      name: 'sluice_bpf_map_errors_total',
      help: 'Failed BPF map operations by errno',
      labelNames: ['map', 'operation', 'errno'],
      registers: [registry],
    }),
    full: new Counter({
      name: 'sluice_bpf_map_full_total',
      help: 'Writes refused because the BPF map was full (E2BIG/ENOSPC or over capacity)',
      labelNames: ['map'],
      registers: [registry],
    }),
    entries: new Gauge({
      name: 'sluice_bpf_map_entries',
      help: 'Entries in the BPF map after the last reconcile',
      labelNames: ['map'],
      registers: [registry],
    }),
    capacity: new Gauge({
      name: 'sluice_bpf_map_capacity',
      help: 'max_entries of the BPF map',
      labelNames: ['map'],
      registers: [registry],
    }),
  };
  cache.set(registry, metrics);
  return metrics;
}
