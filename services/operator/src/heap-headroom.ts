/**
 * A fixed headroom for V8's old generation. V8 lets the heap grow past what the last full collection kept by a share
 * of it (up to 4× by default, ~2.5 % under --optimize-for-size): neither fits a process whose live heap goes from
 * ~50 MB (500 nodes) to ~250 MB (100,000 pods) while churn promotes a steady stream of records that live a few hundred
 * milliseconds (the latest bytes of every EndpointSlice). A share large enough for the small heap costs the large one
 * its RSS; one small enough for the large heap makes the small one collect every ~150 ms, with four GC threads
 * re-marking the whole heap each time. A fixed number of bytes of headroom bounds both the RSS over live and the
 * collections per promoted byte, whatever the heap's size.
 *
 * V8 has no such setting, but it reads --heap-growing-percent each time it sets the next limit (at the end of a full
 * collection), so this sets it after each full collection from what that collection kept.
 */
import { PerformanceObserver, constants, type PerformanceEntry } from 'node:perf_hooks';
import { getHeapStatistics, setFlagsFromString } from 'node:v8';

/**
 * The operator's: at 1,000 pod events/s a full collection every ~1 s at 500 nodes; 16 MiB cost a third of the pod
 * events per CPU-second again (1,888 against 2,887).
 */
export const HEAP_HEADROOM_BYTES = 32 * 2 ** 20;

/** The growing percent that gives `headroomBytes` over `liveBytes`, within what V8 accepts and is sensible. */
export function growingPercent(liveBytes: number, headroomBytes: number): number {
  // Below 5 % V8's own minimum step decides anyway; above 100 % a small heap would be allowed to double for nothing.
  return Math.min(100, Math.max(5, Math.round((100 * headroomBytes) / Math.max(liveBytes, 1))));
}

export interface HeapHeadroom {
  /** The percent set last. */
  readonly percent: number;
  stop(): void;
}

function isMajor(entry: PerformanceEntry): boolean {
  // A 'gc' entry's detail says which collection it was (Node's NodeGCPerformanceDetail).
  const { detail } = entry as { detail?: { kind?: number } };
  return detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR;
}

export function keepHeapHeadroom(
  headroomBytes: number,
  set: (percent: number) => void = (percent) => setFlagsFromString(`--heap-growing-percent=${percent}`),
  liveBytes: () => number = () => getHeapStatistics().used_heap_size,
): HeapHeadroom {
  let percent = 0;
  const apply = () => {
    const next = growingPercent(liveBytes(), headroomBytes);
    if (next === percent) return;
    percent = next;
    set(next);
  };
  apply();
  // Called soon after the collection, so the heap used is close to what it kept.
  const observer = new PerformanceObserver((list) => {
    if (list.getEntries().some(isMajor)) apply();
  });
  observer.observe({ entryTypes: ['gc'] });
  return {
    get percent() {
      return percent;
    },
    stop: () => observer.disconnect(),
  };
}
