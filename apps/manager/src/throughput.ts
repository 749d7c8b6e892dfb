/**
 * Tasks finished per second over the last ten minutes, for the dashboard's live chart.
 *
 * A ring of one-second buckets keyed by epoch second: recording is two array writes, and a
 * bucket is reused (zeroed) when its second comes round again. Memory is fixed at
 * WINDOW_SECONDS buckets however many tasks finish.
 */

import type { ThroughputPoint } from './live-events.js';

export const WINDOW_SECONDS = 600;

export class Throughput {
  private readonly seconds = new Float64Array(WINDOW_SECONDS).fill(-1);
  private readonly succeeded = new Uint32Array(WINDOW_SECONDS);
  private readonly failed = new Uint32Array(WINDOW_SECONDS);

  constructor(private readonly clock: () => number = Date.now) {}

  /** Counts `n` tasks that reached `succeeded` or `failed` now. */
  record(outcome: 'succeeded' | 'failed', n = 1): void {
    const second = Math.floor(this.clock() / 1000);
    const i = second % WINDOW_SECONDS;
    if (this.seconds[i] !== second) {
      this.seconds[i] = second;
      this.succeeded[i] = 0;
      this.failed[i] = 0;
    }
    (outcome === 'succeeded' ? this.succeeded : this.failed)[i]! += n;
  }

  /**
   * The finished seconds after `afterSecond` (exclusive) up to the last complete second, oldest
   * first, with zeros for quiet seconds. Default: the whole window.
   */
  since(afterSecond = -Infinity): ThroughputPoint[] {
    const last = Math.floor(this.clock() / 1000) - 1; // the current second is still filling
    const first = Math.max(last - WINDOW_SECONDS + 1, Number.isFinite(afterSecond) ? afterSecond + 1 : -Infinity);
    const out: ThroughputPoint[] = [];
    for (let t = first; t <= last; t++) {
      const i = t % WINDOW_SECONDS;
      const live = this.seconds[i] === t;
      out.push({ t, succeeded: live ? this.succeeded[i]! : 0, failed: live ? this.failed[i]! : 0 });
    }
    return out;
  }
}
