/**
 * Live updates for the dashboard: one timer reads a small snapshot of the queue once a second
 * while anyone is watching, and fans it out to every subscriber as a `tick`.
 *
 * Why poll the store instead of pushing from the hot path: at 1,000 results a second, per-event
 * pushes would have to be coalesced anyway, and a once-a-second read of the job counters, the
 * active jobs and the workers costs well under a millisecond. It keeps the gateway, the
 * committer and the store free of dashboard code, and every tick is a consistent picture.
 *
 * Jobs that changed are sent with their current state, and keep being sent for
 * RECENT_TICKS ticks after they stop changing. A client that fetched a job list while a tick
 * was in flight is therefore corrected by the next ticks instead of showing a stale bar forever.
 */
import type { Job, JobState, TaskState, WorkerState } from '@pullman/protocol';
import { JOB_STATES, TASK_STATES, WORKER_STATES, parseJobId } from '@pullman/protocol';
import type { TaskStore } from '@pullman/store';
import type { LiveEvent, LiveSummary } from './live-events.js';
import { slotCounts } from './slots.js';
import type { Throughput } from './throughput.js';

export type { LiveEvent } from './live-events.js';

/** How many ticks a changed job keeps being sent after its last change. */
const RECENT_TICKS = 5;
/** Newest jobs watched for appearing and finishing between ticks; active jobs are always watched. */
const WATCH_NEWEST = 50;
/** Most active jobs read per tick. */
const WATCH_ACTIVE = 500;

export type Subscriber = (e: LiveEvent) => void;

export class LiveHub {
  private readonly subscribers = new Set<Subscriber>();
  private timer: NodeJS.Timeout | null = null;
  /** Last seen JSON of every watched job, to tell what changed. */
  private seen = new Map<string, string>();
  /** Job id -> ticks it will still be sent. */
  private readonly recent = new Map<string, number>();
  private lastSecond = -Infinity;

  constructor(
    private readonly store: TaskStore,
    private readonly throughput: Throughput,
    private readonly intervalMs = 1_000,
  ) {}

  get subscriberCount(): number {
    return this.subscribers.size;
  }

  /** Adds a subscriber and sends it `hello` at once; returns the unsubscribe function. */
  subscribe(send: Subscriber): () => void {
    if (this.subscribers.size === 0) {
      // First watcher: start from the present, so the first tick does not list every job.
      this.seen = this.watchedJobs();
      const points = this.throughput.since();
      this.lastSecond = points.length ? points[points.length - 1]!.t : -Infinity;
      this.timer = setInterval(() => this.tick(), this.intervalMs);
      this.timer.unref();
    }
    this.subscribers.add(send);
    send({ event: 'hello', data: { ...this.summary(), throughput: this.throughput.since() } });
    return () => {
      this.subscribers.delete(send);
      if (this.subscribers.size === 0) this.stop();
    };
  }

  /** Stops the timer and forgets every subscriber (manager shutdown). */
  close(): void {
    this.subscribers.clear();
    this.stop();
  }

  /** One tick: read, diff, send. Public so tests can drive it without waiting. */
  tick(): void {
    if (this.subscribers.size === 0) return;
    const now = this.watchedJobs();
    for (const [id, json] of now) if (this.seen.get(id) !== json) this.recent.set(id, RECENT_TICKS);
    // A job that left the watched set (finished and scrolled out of the newest) was last seen
    // active, so it changed: read it once more.
    const gone = [...this.seen.keys()].filter((id) => !now.has(id));
    this.seen = now;
    const changedJobs: Job[] = [];
    for (const [id, left] of this.recent) {
      const json = now.get(id);
      const job = json ? (JSON.parse(json) as Job) : this.readJob(id);
      if (job) changedJobs.push(job);
      if (left <= 1) this.recent.delete(id);
      else this.recent.set(id, left - 1);
    }
    for (const id of gone) {
      if (this.recent.has(id)) continue;
      const job = this.readJob(id);
      if (job) changedJobs.push(job);
    }
    const throughput = this.throughput.since(this.lastSecond);
    if (throughput.length) this.lastSecond = throughput[throughput.length - 1]!.t;
    const e: LiveEvent = { event: 'tick', data: { ...this.summary(), throughput, changedJobs } };
    for (const s of this.subscribers) s(e);
  }

  private stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.recent.clear();
  }

  private summary(): LiveSummary {
    const workers = Object.fromEntries(WORKER_STATES.map((s) => [s, 0])) as Record<WorkerState, number>;
    const all = this.store.listWorkers();
    for (const w of all) workers[w.state]++;
    const { used, free } = slotCounts(all);
    const tasks = this.store.taskCounts();
    const jobs = this.store.jobCounts();
    return {
      at: new Date().toISOString(),
      tasks: Object.fromEntries(TASK_STATES.map((s) => [s, tasks[s]])) as Record<TaskState, number>,
      jobs: Object.fromEntries(JOB_STATES.map((s) => [s, jobs[s]])) as Record<JobState, number>,
      workers,
      slots: { used, free },
    };
  }

  private watchedJobs(): Map<string, string> {
    const out = new Map<string, string>();
    for (const j of this.store.listJobs({ state: 'active', limit: WATCH_ACTIVE }).items) out.set(j.id, JSON.stringify(j));
    for (const j of this.store.listJobs({ limit: WATCH_NEWEST }).items) out.set(j.id, JSON.stringify(j));
    return out;
  }

  private readJob(id: string): Job | null {
    const seq = parseJobId(id);
    return seq === null ? null : this.store.getJob(seq);
  }
}
