/**
 * Prometheus metrics. Gauges are computed at scrape time from SQLite counters (the job table
 * keeps per-state counts), so scraping never scans the task table. Counters and histograms are
 * bumped where things happen; docs/observability.md lists every metric and its labels.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { JOB_STATES, TASK_STATES, WORKER_STATES, type TaskState, type WorkerMessage } from '@pullman/protocol';
import type { TaskStore } from '@pullman/store';
import { slotCounts } from './slots.js';
import { Throughput } from './throughput.js';

/** Why a task went back to the queue. */
export type RequeueReason = 'retry' | 'expired' | 'released' | 'worker-gone' | 'not-on-worker' | 'undelivered' | 'manual';

export interface ManagerMetrics {
  readonly registry: Registry;
  /** Tasks finished per second over the last ten minutes (the dashboard's chart). */
  readonly throughput: Throughput;
  /**
   * Execution reports recorded by one group commit: each with the task's state after it
   * (`queued` = retried) and the run's duration. Counters move once per batch, not per report:
   * per-report labelled increments were ~7% of the manager's CPU at 8 x 16 (docs/benchmarks.md).
   */
  tasksFinished(reports: ReadonlyArray<{ state: TaskState; durationMs: number }>): void;
  /** Tasks that reached a terminal state without an execution report: lost past the cap, or cancelled. */
  tasksEnded(outcome: 'failed' | 'cancelled', n: number): void;
  /** One dispatch round sent `tasks` to a worker at `sentAt`; its claim started at `claimedAt` (epoch ms). */
  dispatched(tasks: ReadonlyArray<{ queuedAt: number }>, sentAt: number, claimedAt: number): void;
  requeued(reason: RequeueReason, n?: number): void;
  leasesExpired(n: number): void;
  /** One HTTP request answered; `route` is the route pattern (`/v1/jobs/:id`), never the raw URL. */
  httpRequest(method: string, route: string, statusCode: number, seconds: number): void;
  /** One schema-valid message received on the worker channel (counted even if then refused). */
  workerMessage(type: WorkerMessage['type']): void;
}

/**
 * Every worker message type, so each series exists (at 0) from the start. A record, not a list,
 * so that a message type added to the protocol fails to compile here until it is listed.
 */
const WORKER_MESSAGE_TYPES = Object.keys({
  hello: 1, pull: 1, heartbeat: 1, result: 1, results: 1, release: 1, draining: 1, health: 1, bye: 1,
} satisfies Record<WorkerMessage['type'], 1>) as Array<WorkerMessage['type']>;

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
  // Workers and slots share one read per scrape: the workers gauge (serialized first) reads and
  // sets both.
  const slotGauge = new Gauge({ name: 'pullman_slots', help: 'Slots of connected workers, used or free', labelNames: ['state'], registers: [] });
  new Gauge({
    name: 'pullman_workers',
    help: 'Workers by state',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      const workers = store.listWorkers();
      const byState = Object.fromEntries(WORKER_STATES.map((s) => [s, 0])) as Record<string, number>;
      for (const w of workers) byState[w.state] = (byState[w.state] ?? 0) + 1;
      const { used, free } = slotCounts(workers);
      for (const s of WORKER_STATES) this.set({ state: s }, byState[s] ?? 0);
      slotGauge.set({ state: 'used' }, used);
      slotGauge.set({ state: 'free' }, free);
    },
  });
  registry.registerMetric(slotGauge);

  const finished = new Counter({ name: 'pullman_tasks_finished_total', help: 'Tasks that reached a terminal state, by outcome', labelNames: ['outcome'], registers: [registry] });
  const executions = new Counter({ name: 'pullman_task_executions_total', help: 'Execution reports recorded from workers, by outcome (a failed execution that is retried counts as failed)', labelNames: ['outcome'], registers: [registry] });
  const requeued = new Counter({ name: 'pullman_tasks_requeued_total', help: 'Tasks put back in the queue, by reason', labelNames: ['reason'], registers: [registry] });
  const expired = new Counter({ name: 'pullman_leases_expired_total', help: 'Leases that expired because their worker went silent', registers: [registry] });
  const dispatchedTotal = new Counter({ name: 'pullman_tasks_dispatched_total', help: 'Tasks leased and sent to workers', registers: [registry] });
  // Every label value starts at zero, so a dashboard's rate() has a series before the first event.
  for (const outcome of ['succeeded', 'failed', 'cancelled']) finished.inc({ outcome }, 0);
  for (const outcome of ['succeeded', 'failed']) executions.inc({ outcome }, 0);
  for (const reason of ['retry', 'expired', 'released', 'worker-gone', 'not-on-worker', 'undelivered', 'manual'] satisfies RequeueReason[]) requeued.inc({ reason }, 0);

  const duration = new Histogram({
    name: 'pullman_task_duration_seconds',
    help: 'Wall time of task executions as reported by workers',
    buckets: [0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400],
    registers: [registry],
  });
  const dispatchLatency = new Histogram({
    name: 'pullman_dispatch_latency_seconds',
    help: 'Time from a task entering the queue (submitted or requeued) to being sent to a worker',
    buckets: [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400],
    registers: [registry],
  });
  const claimLatency = new Histogram({
    name: 'pullman_dispatch_claim_seconds',
    help: 'Time from starting a claim to sending the tasks (the manager-side cost of a dispatch round)',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5],
    registers: [registry],
  });
  const http = new Histogram({
    name: 'pullman_http_request_duration_seconds',
    help: 'HTTP requests by method, route pattern and status code',
    labelNames: ['method', 'route', 'status_code'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
    registers: [registry],
  });

  const messages = new Counter({ name: 'pullman_worker_messages_total', help: 'Messages received from workers, by type (a results message counts once)', labelNames: ['type'], registers: [registry] });
  // One child per type, made once: labels() hashes its argument on every call, and this runs per frame.
  const messagesOf = new Map(WORKER_MESSAGE_TYPES.map((t) => [t, messages.labels(t)]));
  for (const child of messagesOf.values()) child.inc(0); // listed at 0 from the first scrape
  const throughput = new Throughput();

  return {
    registry,
    throughput,
    tasksFinished(reports) {
      let succeeded = 0;
      let failed = 0;
      let retried = 0;
      for (const r of reports) {
        duration.observe(r.durationMs / 1000);
        if (r.state === 'succeeded') succeeded++;
        else if (r.state === 'failed') failed++;
        else if (r.state === 'queued') retried++;
      }
      if (succeeded + failed + retried === 0) return;
      if (succeeded > 0) {
        executions.inc({ outcome: 'succeeded' }, succeeded);
        finished.inc({ outcome: 'succeeded' }, succeeded);
        throughput.record('succeeded', succeeded);
      }
      if (failed + retried > 0) executions.inc({ outcome: 'failed' }, failed + retried);
      if (failed > 0) {
        finished.inc({ outcome: 'failed' }, failed);
        throughput.record('failed', failed);
      }
      if (retried > 0) requeued.inc({ reason: 'retry' }, retried);
    },
    tasksEnded(outcome, n) {
      if (n <= 0) return;
      finished.inc({ outcome }, n);
      if (outcome === 'failed') throughput.record('failed', n);
    },
    dispatched(tasks, sentAt, claimedAt) {
      dispatchedTotal.inc(tasks.length);
      claimLatency.observe((sentAt - claimedAt) / 1000);
      for (const t of tasks) dispatchLatency.observe(Math.max(0, sentAt - t.queuedAt) / 1000);
    },
    requeued(reason, n = 1) {
      if (n > 0) requeued.inc({ reason }, n);
    },
    leasesExpired(n) {
      expired.inc(n);
    },
    httpRequest(method, route, statusCode, seconds) {
      http.observe({ method, route, status_code: String(statusCode) }, seconds);
    },
    workerMessage(type) {
      messagesOf.get(type)?.inc();
    },
  };
}
