import { BpfError } from './libbpf.ts';

/**
 * A map has no room for the entries asked for: the kernel said E2BIG (hash, array) or ENOSPC (LPM trie), or the
 * in-memory backend hit the same capacity. `applied` entries of the batch went in before it stopped.
 */
export class MapFullError extends Error {
  override name = 'MapFullError';
  constructor(
    readonly map: string,
    readonly capacity: number,
    readonly applied: number,
    readonly requested: number,
    readonly code: string = 'E2BIG',
  ) {
    super(`BPF map ${map} is full (capacity ${capacity}): ${applied} of ${requested} entries written (${code})`);
  }
}

export function isMapFull(err: unknown): boolean {
  return err instanceof MapFullError || (err instanceof BpfError && (err.code === 'E2BIG' || err.code === 'ENOSPC'));
}
