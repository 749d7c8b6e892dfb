/**
 * Which workers are connected and how many of their slots are free, for everything that counts
 * them: the metrics, the live feed and the dashboard (which bundles this file, so it imports
 * types only).
 */
import type { Worker, WorkerState } from '@pullman/protocol';

/** Has a session now: ready, busy, unhealthy (connected, but it takes no work) or draining. */
export function isConnectedState(state: WorkerState): boolean {
  return state !== 'offline' && state !== 'gone';
}

export function isConnected(w: Worker): boolean {
  return isConnectedState(w.state);
}

/**
 * Slots a worker has free: a connected worker's unused slots, except an unhealthy one's, which
 * it takes no work on until its problem is fixed.
 */
export function freeSlots(w: Worker): number {
  return isConnected(w) && w.state !== 'unhealthy' ? Math.max(0, w.slots - w.usedSlots) : 0;
}

/** Slots of connected workers: used, and free. */
export function slotCounts(workers: Iterable<Worker>): { used: number; free: number } {
  let used = 0;
  let free = 0;
  for (const w of workers) {
    if (!isConnected(w)) continue;
    used += w.usedSlots;
    free += freeSlots(w);
  }
  return { used, free };
}
