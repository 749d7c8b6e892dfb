/**
 * The shapes of the live feed (GET /v1/events), shared by the manager and the dashboard's
 * browser code. Types only: nothing here runs.
 */
import type { Job, JobState, TaskState, WorkerState } from '@pullman/protocol';

/** One second of the throughput chart: the epoch second and the tasks that finished in it. */
export interface ThroughputPoint {
  t: number;
  succeeded: number;
  failed: number;
}

export interface LiveSummary {
  /** When the snapshot was read (ISO 8601, the manager's clock). */
  at: string;
  tasks: Record<TaskState, number>;
  jobs: Record<JobState, number>;
  workers: Record<WorkerState, number>;
  slots: { used: number; free: number };
}

/** `event: hello`, sent once when the stream opens. */
export interface HelloEvent extends LiveSummary {
  /** Tasks finished per second over the whole ten-minute window, oldest first. */
  throughput: ThroughputPoint[];
}

/** `event: tick`, sent every second. */
export interface TickEvent extends LiveSummary {
  /** The seconds completed since the previous tick. */
  throughput: ThroughputPoint[];
  /** Jobs that changed in the last few ticks, in their current state. */
  changedJobs: Job[];
}

export type LiveEvent = { event: 'hello'; data: HelloEvent } | { event: 'tick'; data: TickEvent };
