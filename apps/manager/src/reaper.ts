/**
 * The reaper returns work from workers that vanished. Every tick it:
 *  1. closes sessions silent past the lease TTL (a socket can stay open with nobody behind it);
 *  2. requeues tasks whose lease expired, without spending a retry (WORKER_LOST past the cap);
 *  3. declares workers offline for a whole TTL `gone` (their leases have expired by then).
 */
import type { FastifyBaseLogger } from 'fastify';
import type { TaskStore } from '@pullman/store';
import type { GroupCommitter } from './committer.js';
import type { WorkerGateway } from './gateway.js';
import type { ManagerMetrics } from './metrics.js';

export interface ReaperOptions {
  store: TaskStore;
  committer: GroupCommitter;
  gateway: WorkerGateway;
  metrics: ManagerMetrics;
  log: FastifyBaseLogger;
  leaseTtlMs: number;
  now?: () => number;
}

export class Reaper {
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  private readonly now: () => number;

  constructor(private readonly o: ReaperOptions) {
    this.now = o.now ?? Date.now;
  }

  /** Ticks at a quarter of the TTL (at most once a second), so expiry is noticed promptly. */
  start(): void {
    const every = Math.max(100, Math.min(1_000, Math.floor(this.o.leaseTtlMs / 4)));
    this.timer = setInterval(() => void this.tick(), every);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** One pass; returns what it did (tests call it directly). */
  async tick(): Promise<{ requeued: number; failed: number; gone: number }> {
    if (this.running) return { requeued: 0, failed: 0, gone: 0 };
    this.running = true;
    try {
      this.o.gateway.closeSilentSessions();
      const { store } = this.o;
      const expired = await this.o.committer.run(() => store.requeueExpired());
      const lost = expired.requeued + expired.failed;
      if (lost > 0) {
        this.o.metrics.leasesExpired(lost);
        this.o.metrics.requeued('expired', expired.requeued);
        this.o.metrics.tasksEnded('failed', expired.failed);
        this.o.log.warn(expired, 'requeued tasks whose leases expired');
        this.o.gateway.kick();
      }
      const cutoff = this.now() - this.o.leaseTtlMs;
      const gone = await this.o.committer.run(() => {
        const ids = store.workersOfflineSince(cutoff);
        for (const id of ids) store.setWorkerState(id, 'gone');
        return ids;
      });
      if (gone.length) this.o.log.info({ workers: gone }, 'offline workers declared gone');
      return { ...expired, gone: gone.length };
    } catch (err) {
      this.o.log.error({ err }, 'reaper pass failed');
      return { requeued: 0, failed: 0, gone: 0 };
    } finally {
      this.running = false;
    }
  }
}
