/**
 * Prometheus metrics. Gauges are computed at scrape time from SQLite counters (the job table
 * keeps per-state counts), so scraping never scans the task table.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { JOB_STATES, TASK_STATES, WORKER_STATES, type TaskState } from '@pullman/protocol';
import type { TaskStore } from '@pullman/store';

export interface ManagerMetrics {
  readonly registry: Registry;
  taskFinished(state: TaskState, durationMs: number): void;
  dispatched(tasks: number, latencyMs: number): void;
  requeued(reason: 'expired' | 'released' | 'retry' | 'worker-gone', n?: number): void;
  leasesExpired(n: number): void;
}

export function createMetrics(store: TaskStore): ManagerMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });

  new Gauge({
    name: 'pullman_tasks',
    help: 'Tasks by state',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      const counts = store.taskCounts();
      for (const s of TASK_STATES) this.set({ state: s }, counts[s]);
    },
  });
  new Gauge({
    name: 'pullman_jobs',
    help: 'Jobs by state',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      const counts = store.jobCounts();
      for (const s of JOB_STATES) this.set({ state: s }, counts[s]);
    },
  });
  // Workers and slots share one read per scrape.
  const workerGauge = new Gauge({ name: 'pullman_workers', help: 'Workers by state', labelNames: ['state'], registers: [registry] });
  new Gauge({
    name: 'pullman_slots',
    help: 'Slots of connected workers, used or free',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      const byState = Object.fromEntries(WORKER_STATES.map((s) => [s, 0])) as Record<string, number>;
      let used = 0;
      let free = 0;
      for (const w of store.listWorkers()) {
        byState[w.state] = (byState[w.state] ?? 0) + 1;
        if (w.state === 'ready' || w.state === 'busy' || w.state === 'draining') {
          used += w.usedSlots;
          free += Math.max(0, w.slots - w.usedSlots);
        }
      }
      for (const s of WORKER_STATES) workerGauge.set({ state: s }, byState[s] ?? 0);
      this.set({ state: 'used' }, used);
      this.set({ state: 'free' }, free);
    },
  });

  const finished = new Counter({ name: 'pullman_tasks_finished_total', help: 'Task executions recorded, by resulting state', labelNames: ['state'], registers: [registry] });
  const requeued = new Counter({ name: 'pullman_tasks_requeued_total', help: 'Tasks put back in the queue, by reason', labelNames: ['reason'], registers: [registry] });
  const expired = new Counter({ name: 'pullman_leases_expired_total', help: 'Leases that expired because their worker went silent', registers: [registry] });
  const duration = new Histogram({
    name: 'pullman_task_duration_seconds',
    help: 'Wall time of task executions as reported by workers',
    buckets: [0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400],
    registers: [registry],
  });
  const dispatchLatency = new Histogram({
    name: 'pullman_dispatch_claim_seconds',
    help: 'Time from starting a claim to sending the tasks',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5],
    registers: [registry],
  });
  const dispatched = new Counter({ name: 'pullman_tasks_dispatched_total', help: 'Tasks leased and sent to workers', registers: [registry] });

  return {
    registry,
    taskFinished(state, durationMs) {
      finished.inc({ state });
      if (state === 'queued') requeued.inc({ reason: 'retry' });
      duration.observe(durationMs / 1000);
    },
    dispatched(n, latencyMs) {
      dispatched.inc(n);
      dispatchLatency.observe(latencyMs / 1000);
    },
    requeued(reason, n = 1) {
      requeued.inc({ reason }, n);
    },
    leasesExpired(n) {
      expired.inc(n);
    },
  };
}
