/**
 * The durable task queue. All queue SQL lives in this file, prepared once at open.
 *
 * Every public method is one named operation and runs in its own transaction. Called inside
 * `store.transaction(...)` (the manager's group commit) each becomes a savepoint, so one
 * failing operation rolls back alone while its neighbours in the batch still commit.
 */
import type Database from 'better-sqlite3';
import { randomUUID } from 'node:crypto';
import {
  PullmanError,
  formatJobId,
  formatTaskId,
  type Attempt,
  type AttemptOutcome,
  type ErrorInfo,
  type ExecutionReport,
  type HelloMessage,
  type Job,
  type JobState,
  type ReleaseReason,
  type ResultLine,
  type Task,
  type TaskAssignment,
  type TaskDefaults,
  type TaskResult,
  type TaskSpec,
  TASK_STATES,
  TERMINAL_TASK_STATES,
  type TaskState,
  type VmFacts,
  type Worker,
  type WorkerState,
  MAX_OUTPUT_BYTES,
} from '@pullman/protocol';
import { BatchStatement } from './batch.js';
import { BACKSTOP_PAGES, BackgroundCheckpointer } from './checkpointer.js';
import { openDatabase, type SyncMode } from './db.js';
import { QueueClasses } from './queue-classes.js';
import { groupByLabels, type LabelGroup, type Taker } from './dealing.js';

/**
 * Extra candidates a claim looks at beyond its slot count, so that when the head of the queue
 * holds tasks too big for the free slots, smaller ones behind them can fill the gap (backfill)
 * in the same claim.
 */
const CLAIM_LOOKAHEAD = 16;

/** Infrastructure losses (expired lease, release) a task may suffer; the next one fails it. */
export const MAX_LOSSES = 10;

export interface Clock {
  now(): number;
}
export const systemClock: Clock = { now: () => Date.now() };

export interface StoreOptions {
  path: string;
  sync?: SyncMode;
  /** Cap on the database size in pages (SQLite `max_page_count`); see OpenDbOptions. */
  maxPages?: number | undefined;
  /** How long a lease lasts after a claim or heartbeat. */
  leaseTtlMs: number;
  clock?: Clock;
  /**
   * Who copies the WAL back into the database file: SQLite inside the commit that fills it
   * (`inline`, the default), or a thread of its own (`background`, what the manager uses;
   * see checkpointer.ts).
   */
  checkpoint?: 'inline' | 'background';
  /** Hears of a background checkpoint that failed; it is retried, and the data is not at risk. */
  onCheckpointError?: (message: string) => void;
}

/** Who is asking for or reporting on a lease. */
export interface SessionRef {
  workerId: string;
  sessionId: string;
}

/** One worker's claim in a batch. */
export interface ClaimRequest {
  session: SessionRef;
  labels: readonly string[];
  freeSlots: number;
  maxTasks?: number;
}

/** A claimed task as the dispatcher sends it: the spec is the stored JSON text. */
export interface ClaimedTask {
  taskId: string;
  jobId: string;
  key: string | null;
  attempt: number;
  leaseId: string;
  slots: number;
  specJson: string;
  /** When the task last entered the queue (epoch ms), for the dispatch latency metric; not sent. */
  queuedAt: number;
}

/**
 * What a submission did: how many tasks it stored, and, per handoff request (in the order
 * given), the tasks it handed straight to that worker, or null when a queued task fits the
 * worker, which then claims as usual (TaskStore.submitTasks).
 */
export interface SubmitOutcome {
  accepted: number;
  duplicates: number;
  handed: Array<ClaimedTask[] | null>;
}

export interface LeaseRef {
  taskSeq: number;
  leaseId: string;
}

/** One worker's report on one lease, as settleReports takes them. */
export interface ReportItem {
  workerId: string;
  lease: LeaseRef;
  report: ExecutionReport;
}

/** A running task whose worker must be told to stop it. */
export interface LeaseToCancel {
  workerId: string;
  taskId: string;
  leaseId: string;
}

export type ReportOutcome =
  | { status: 'stale' }
  | { status: 'recorded'; taskState: TaskState; jobId: string; requeued: boolean };

/** Tasks taken back from a worker as losses: requeued, or failed WORKER_LOST past MAX_LOSSES. */
export interface LostTasks {
  requeued: number;
  failed: number;
}

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

/** Stored worker state; `busy` is derived from used slots when reading. */
type StoredWorkerState = Exclude<WorkerState, 'busy' | 'unhealthy'>;

interface JobRow {
  id: number;
  name: string | null;
  state: JobState;
  sealed: 0 | 1;
  defaults: string | null;
  created_at: number;
  finished_at: number | null;
  n_queued: number;
  n_running: number;
  n_succeeded: number;
  n_failed: number;
  n_cancelled: number;
}

interface TaskRow {
  id: number;
  job_id: number;
  key: string | null;
  state: TaskState;
  priority: number;
  slots: number;
  requires: string | null;
  spec: string;
  retries: number;
  attempts: number;
  failures: number;
  losses: number;
  worker_id: string | null;
  lease_id: string | null;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  result: string | null;
}

interface AttemptRow {
  attempt: number;
  worker_id: string | null;
  started_at: number;
  ended_at: number | null;
  outcome: AttemptOutcome;
  exit_code: number | null;
  error: string | null;
}

interface WorkerRow {
  id: string;
  name: string;
  hostname: string;
  state: StoredWorkerState;
  slots: number;
  labels: string;
  vm: string | null;
  version: string;
  session_id: string | null;
  connected_at: number | null;
  last_heartbeat_at: number | null;
  offline_since: number | null;
  problem: string | null;
  tasks_succeeded: number;
  tasks_failed: number;
  used_slots: number;
}

/** The columns of a running task that its ending attempt's row is made of. */
interface RunningAttempt {
  id: number;
  attempts: number;
  worker_id: string | null;
  started_at: number | null;
}

/** A row leased by a dispatch round, as the raw lease statements return it. */
type LeasedRow = [id: number, jobSeq: number, key: string | null, attempt: number, spec: string, leaseId: string, queuedAt: number];

/** Per-state deltas applied to a job's counters in one statement. */
type CountDelta = Partial<Record<TaskState, number>>;

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());
const parseJson = <T>(text: string | null): T | null => (text === null ? null : (JSON.parse(text) as T));

export class TaskStore {
  readonly db: Database.Database;
  private readonly clock: Clock;
  private readonly leaseTtlMs: number;
  private readonly s: ReturnType<typeof prepare>;
  private readonly checkpointer: BackgroundCheckpointer | null = null;
  /**
   * Runs a function in a transaction, or in a savepoint inside one. Built once: better-sqlite3
   * builds four wrapper functions per db.transaction() call, and the group commit opens a
   * transaction per flush and a savepoint per operation.
   */
  private readonly inTransaction: (fn: () => unknown) => unknown;
  /**
   * The classes that may have queued tasks: every class that has some, and maybe a few emptied
   * since (a claim that finds one empty drops it; a cancelled job's are dropped with it). null:
   * unknown, read from the index at the next claim. Why in memory: reading the classes from the
   * index costs a few statements per claim, and the claim is on the idle-latency path; the set
   * grows only when tasks enter the queue, which happens in this class alone (noteQueued).
   */
  private queueClasses: QueueClasses | null = null;

  constructor(options: StoreOptions) {
    this.db = openDatabase({ path: options.path, sync: options.sync ?? 'normal', maxPages: options.maxPages });
    this.inTransaction = this.db.transaction((fn: () => unknown) => fn());
    if (options.checkpoint === 'background' && options.path !== ':memory:') {
      const inlineDefault = this.db.pragma('wal_autocheckpoint', { simple: true }) as number;
      this.db.pragma(`wal_autocheckpoint = ${BACKSTOP_PAGES}`);
      this.checkpointer = new BackgroundCheckpointer(options.path, {
        onError: options.onCheckpointError,
        // Without the thread, SQLite's own checkpoint at its usual size keeps the WAL small.
        onExit: () => {
          options.onCheckpointError?.('the checkpoint thread ended; checkpointing inline from now on');
          if (this.db.open) this.db.pragma(`wal_autocheckpoint = ${inlineDefault}`);
        },
      });
    }
    this.clock = options.clock ?? systemClock;
    this.leaseTtlMs = options.leaseTtlMs;
    this.s = prepare(this.db);
    // Wrap every operation in a transaction once, here, so the methods below read as plain code.
    // Inside an open transaction (the manager's group commit, which gives every operation a
    // savepoint of its own) a method runs as it is: a second savepoint per call cost ~15% of
    // dispatch throughput in profiles and bought nothing.
    for (const name of TRANSACTIONAL) {
      const fn = (this as unknown as Record<string, (...a: unknown[]) => unknown>)[name]!.bind(this);
      const tx = this.db.transaction(fn);
      (this as unknown as Record<string, unknown>)[name] = (...args: unknown[]) => (this.db.inTransaction ? fn(...args) : this.rollingBack(() => tx(...args)));
    }
  }

  /** Runs `fn` in one transaction (nested operations become savepoints). */
  transaction<T>(fn: () => T): T {
    return this.rollingBack(() => this.inTransaction(fn) as T);
  }

  /**
   * Runs a transaction or savepoint, forgetting the queue classes if it throws (and so rolls
   * back): a claim in it may have dropped a class it found empty after the same transaction
   * moved that class's last tasks out of the queue, and the rollback puts them back.
   */
  private rollingBack<T>(run: () => T): T {
    try {
      return run();
    } catch (err) {
      this.queueClasses = null;
      throw err;
    }
  }

  close(): void {
    if (!this.db.open) return;
    this.checkpointer?.stop();
    this.db.pragma('wal_checkpoint(TRUNCATE)');
    this.db.close();
  }

  // ---- jobs ----------------------------------------------------------------------------------

  /**
   * Creates a job, optionally with its first tasks (already resolved against `defaults`).
   * Sealed unless `open`. Returns the job and the submit counts.
   */
  createJob(
    input: { name?: string | undefined; defaults?: TaskDefaults | undefined; open?: boolean | undefined; tasks?: TaskSpec[] | undefined },
    handoff: readonly ClaimRequest[] = [],
  ): SubmitOutcome & { job: Job } {
    const now = this.clock.now();
    const { lastInsertRowid } = this.s.insertJob.run(input.name ?? null, input.defaults ? JSON.stringify(input.defaults) : null, now);
    const jobSeq = Number(lastInsertRowid);
    const counts = this.insertTasks(jobSeq, input.tasks ?? [], now, handoff);
    if (!input.open) this.s.sealJob.run(jobSeq);
    this.finishJobIfDone(jobSeq, now);
    return { job: this.mustGetJob(jobSeq), ...counts };
  }

  /**
   * Adds resolved tasks to an unsealed job in one transaction, idempotent per key. `specs` are
   * resolved already, or a function that resolves them from the job's stored defaults, read by
   * the same lookup that checks the job (one read less on the idle-latency path than calling
   * submissionDefaults first).
   *
   * `handoff` are the workers waiting for work. A task that one of them can take is inserted
   * already leased to it, when no queued task fits that worker: the claim that would otherwise
   * follow in the same commit could only find this submission's tasks for it, so skipping it
   * overtakes nothing in the queue and saves the claim's statements on the idle-latency path
   * (docs/benchmarks.md). The submission's tasks are dealt in queue order (priority, then
   * submission order), round-robin across the workers, as a claim deals them.
   *
   * Returns the counts and the handed tasks. Throws JOB_NOT_FOUND, JOB_SEALED, or what `specs`
   * throws, and all of them before it writes anything (the manager runs it without a
   * savepoint: committer.ts, HOT).
   */
  submitTasks(
    jobSeq: number,
    specs: readonly TaskSpec[] | ((defaults: TaskDefaults | undefined) => readonly TaskSpec[]),
    handoff: readonly ClaimRequest[] = [],
  ): SubmitOutcome {
    const defaults = this.submissionDefaults(jobSeq); // the same checks, the same one read
    return this.insertTasks(jobSeq, typeof specs === 'function' ? specs(defaults) : specs, this.clock.now(), handoff);
  }

  /**
   * The defaults (as stored at creation) to resolve tasks appended to a job before they are
   * submitted. Throws JOB_NOT_FOUND, or JOB_SEALED when the job takes no more tasks, so that an
   * upload fails before it streams. One read: this is on the idle-latency path.
   */
  submissionDefaults(jobSeq: number): TaskDefaults | undefined {
    const job = this.s.getJob.get(jobSeq) as JobRow | undefined;
    if (!job) throw new PullmanError('JOB_NOT_FOUND', `job ${formatJobId(jobSeq)} does not exist`);
    if (job.sealed) throw new PullmanError('JOB_SEALED', `job ${formatJobId(jobSeq)} is sealed; create a new job or submit to an open one`);
    return parseJson<TaskDefaults>(job.defaults) ?? undefined;
  }

  private insertTasks(jobSeq: number, specs: readonly TaskSpec[], now: number, handoff: readonly ClaimRequest[]): SubmitOutcome {
    if (specs.length === 0) return { accepted: 0, duplicates: 0, handed: handoff.map(() => null) };
    const takers = this.handoffTakers(handoff);
    const dealt = takers.some((t) => t !== null) ? dealSubmission(specs, takers) : null;
    const handed = takers.map((t) => (t === null ? null : ([] as Array<{ rank: number; task: ClaimedTask }>)));
    let queued = 0;
    let running = 0;
    specs.forEach((spec, i) => {
      const requires = spec.requires?.length ? JSON.stringify([...new Set(spec.requires)]) : null;
      const slots = spec.slots ?? 1;
      const specJson = JSON.stringify(spec);
      const to = dealt?.[i];
      if (to === undefined) {
        queued += this.s.insertTask.run(jobSeq, spec.key ?? null, spec.priority ?? 0, slots, requires, specJson, spec.retries ?? 0, now).changes;
        this.noteQueued(requires, slots);
        return;
      }
      const { session } = handoff[to.request]!;
      const row = this.s.insertLeasedTask.get(
        jobSeq, spec.key ?? null, spec.priority ?? 0, slots, requires, specJson, spec.retries ?? 0, now,
        now + this.leaseTtlMs, session.workerId, session.sessionId, now,
      ) as [id: number, leaseId: string] | undefined;
      if (!row) return; // a duplicate key: its share of the worker's slots stays free
      running++;
      handed[to.request]!.push({
        rank: to.rank,
        task: { taskId: formatTaskId(row[0]), jobId: formatJobId(jobSeq), key: spec.key ?? null, attempt: 1, leaseId: row[1], slots, specJson, queuedAt: now },
      });
    });
    // A finished job that receives tasks (only possible while open) becomes active again: one
    // statement for the counters and the state, as this is on the idle-latency path.
    if (queued + running > 0) this.s.addSubmitted.run(queued, running, jobSeq);
    return {
      accepted: queued + running,
      duplicates: specs.length - queued - running,
      // Each worker's share in queue order, as a claim returns it.
      handed: handed.map((h) => h && h.sort((a, b) => a.rank - b.rank).map((x) => x.task)),
    };
  }

  /**
   * The handoff requests that may be handed tasks (their labels as a set, their room), or null
   * for each one that some queued task fits: that worker claims from the queue instead. A class
   * in the set may have emptied since it was noted, which only sends a worker to claim.
   */
  private handoffTakers(handoff: readonly ClaimRequest[]): Array<Taker | null> {
    if (handoff.length === 0) return [];
    const classes = (this.queueClasses ??= this.readQueueClasses());
    return handoff.map((r) => {
      const labels = new Set(r.labels);
      if (r.freeSlots < 1 || classes.takeable(labels, r.freeSlots).length > 0) return null;
      return { labels, free: r.freeSlots, room: r.maxTasks ?? 256 };
    });
  }

  /** Seals a job so no more tasks can be added; finishes it if every task is terminal. */
  sealJob(jobSeq: number): Job {
    this.mustGetJob(jobSeq);
    this.s.sealJob.run(jobSeq);
    this.finishJobIfDone(jobSeq, this.clock.now());
    return this.mustGetJob(jobSeq);
  }

  getJob(jobSeq: number): Job | null {
    const row = this.s.getJob.get(jobSeq) as JobRow | undefined;
    return row ? jobFromRow(row) : null;
  }

  /** Newest first. `cursor` is the opaque nextCursor of the previous page. */
  listJobs(query: { state?: JobState | undefined; limit: number; cursor?: string | undefined }): Page<Job> {
    const before = query.cursor === undefined ? Number.MAX_SAFE_INTEGER : decodeCursor(query.cursor);
    const rows = (query.state
      ? this.s.listJobsByState.all(query.state, before, query.limit + 1)
      : this.s.listJobs.all(before, query.limit + 1)) as JobRow[];
    return paginate(rows, query.limit, jobFromRow);
  }

  /**
   * Cancels a job: queued tasks become cancelled, running ones are cancelled and their
   * leases voided. Returns the job and the leases whose workers must kill the processes.
   */
  cancelJob(jobSeq: number): { job: Job; toCancel: LeaseToCancel[] } {
    const job = this.mustGetJob(jobSeq);
    if (job.state !== 'active') return { job, toCancel: [] };
    const now = this.clock.now();
    const toCancel: LeaseToCancel[] = [];
    for (const row of this.s.runningTasksOfJob.all(jobSeq) as TaskRow[]) {
      toCancel.push({ workerId: row.worker_id!, taskId: formatTaskId(row.id), leaseId: row.lease_id! });
      this.endAttempt(row, now, 'cancelled', null, { code: 'CANCELLED', message: 'job cancelled' });
    }
    // The job's queued classes, to drop those it leaves empty: a class no connected worker can
    // take would otherwise stay in the set (costing memory, not claims) until a restart.
    const classes = this.queueClasses ? (this.s.queuedClassesOfJob.all(jobSeq) as Array<[requires: string | null, slots: number]>) : [];
    const queued = this.s.cancelQueuedOfJob.run(now, jobSeq).changes;
    for (const [requires, slots] of classes) if (!this.s.queueOfClass.get(requires, slots, 1)) this.queueClasses!.delete(requires, slots);
    const running = this.s.cancelRunningOfJob.run(now, jobSeq).changes;
    this.applyCounts(jobSeq, { queued: -queued, running: -running, cancelled: queued + running });
    this.s.setJobState.run('cancelled', now, jobSeq);
    // A cancelled job takes no more tasks, even if it was open: a late submitter must not
    // silently revive it.
    this.s.sealJob.run(jobSeq);
    return { job: this.mustGetJob(jobSeq), toCancel };
  }

  /**
   * Requeues a job's failed (or cancelled) tasks with a fresh retry and loss budget, and
   * reopens the job. Returns how many tasks were requeued.
   */
  retryJob(jobSeq: number, state: 'failed' | 'cancelled' = 'failed'): number {
    this.mustGetJob(jobSeq);
    const requeued = this.s.requeueOfJobIn[state].run(this.clock.now(), jobSeq).changes;
    if (requeued > 0) {
      this.queueClasses = null; // of any classes: read them from the index at the next claim
      this.applyCounts(jobSeq, { [state]: -requeued, queued: requeued });
      this.s.reactivateJob.run(jobSeq);
    }
    return requeued;
  }

  // ---- tasks ---------------------------------------------------------------------------------

  getTask(taskSeq: number, withHistory = true): Task | null {
    const row = this.s.getTask.get(taskSeq) as TaskRow | undefined;
    if (!row) return null;
    const task = taskFromRow(row);
    if (withHistory) {
      const rows = this.s.attemptsOfTask.all(taskSeq) as AttemptRow[];
      task.history = rows.map(attemptFromRow);
      const own = ownAttempt(row, rows);
      if (own) task.history.push(own);
    }
    return task;
  }

  /** A job's tasks in submission order, optionally of one state. */
  listTasks(jobSeq: number, query: { state?: TaskState | undefined; limit: number; cursor?: string | undefined }): Page<Task> {
    this.mustGetJob(jobSeq);
    const after = query.cursor === undefined ? 0 : decodeCursor(query.cursor);
    const rows = (query.state
      ? this.s.listTasksIn[query.state].all(jobSeq, after, query.limit + 1)
      : this.s.listTasks.all(jobSeq, after, query.limit + 1)) as TaskRow[];
    return paginate(rows, query.limit, (r) => taskFromRow(r));
  }

  /** One page of result lines for a job's terminal tasks, after task `afterSeq`. */
  resultsPage(jobSeq: number, afterSeq: number, limit: number): { lines: ResultLine[]; lastSeq: number | null } {
    // The first `limit` of each terminal state, merged in task order: the first `limit` of the
    // merge are the page (each state's index is read for `limit` entries at most; migration 7).
    const rows = TERMINAL_TASK_STATES.flatMap((state) => this.s.terminalOfJobIn[state].all(jobSeq, afterSeq, limit) as TaskRow[])
      .sort((a, b) => a.id - b.id)
      .slice(0, limit);
    const lines = rows.map((r): ResultLine => {
      const result = decodeResult(r.result);
      return {
        taskId: formatTaskId(r.id),
        key: r.key,
        state: r.state,
        exitCode: result?.exitCode ?? null,
        output: result?.output ?? null,
        durationMs: result?.durationMs ?? null,
        attempts: r.attempts,
        error: result?.error ?? null,
      };
    });
    return { lines, lastSeq: rows.length ? rows[rows.length - 1]!.id : null };
  }

  /**
   * Cancels one task. A queued task is cancelled; a running one is cancelled and its lease
   * voided (returned so the worker can be told). Terminal tasks are left as they are.
   */
  cancelTask(taskSeq: number): { task: Task; toCancel: LeaseToCancel | null } {
    const row = this.s.getTask.get(taskSeq) as TaskRow | undefined;
    if (!row) throw new PullmanError('TASK_NOT_FOUND', `task ${formatTaskId(taskSeq)} does not exist`);
    const now = this.clock.now();
    let toCancel: LeaseToCancel | null = null;
    if (row.state === 'queued' || row.state === 'running') {
      if (row.state === 'running') {
        toCancel = { workerId: row.worker_id!, taskId: formatTaskId(row.id), leaseId: row.lease_id! };
        this.endAttempt(row, now, 'cancelled', null, { code: 'CANCELLED', message: 'task cancelled' });
      }
      this.s.setTaskTerminal.run('cancelled', now, null, taskSeq);
      this.applyCounts(row.job_id, { [row.state]: -1, cancelled: 1 });
      this.finishJobIfDone(row.job_id, now);
    }
    return { task: this.getTask(taskSeq)!, toCancel };
  }

  // ---- leases --------------------------------------------------------------------------------

  /**
   * Claims queued tasks for a worker: priority first, then FIFO, skipping tasks that need
   * more slots than `freeSlots` or labels the worker lacks. Issues a fresh lease per task.
   * Returns the assignments (their slots sum to at most freeSlots).
   */
  claimTasks(session: SessionRef, labels: readonly string[], freeSlots: number, maxTasks = 256): TaskAssignment[] {
    const [claimed] = this.claimBatch([{ session, labels, freeSlots, maxTasks }]);
    return claimed!.map(toAssignment);
  }

  /**
   * Claims for many waiting workers at once: one candidate read per distinct label set (a
   * walk per queue class it can take) instead of one per worker. Candidates are dealt
   * round-robin in queue order, each to the next worker with room for it. Returns one list per
   * request, in request order; a task's spec stays raw JSON so the dispatcher can send it
   * without re-serialising.
   *
   * Why: with 64 one-slot workers, per-worker claims ran the candidate query 64 times per
   * dispatch round; batching them is most of what took dispatch from ~7k to ~20k tasks/s.
   */
  claimBatch(requests: ReadonlyArray<ClaimRequest>): ClaimedTask[][] {
    const now = this.clock.now();
    const out: ClaimedTask[][] = requests.map(() => []);
    // Task id -> the request it was dealt to, its slots, and its place in the dealing order.
    const dealt = new Map<number, { request: number; slots: number; rank: number }>();
    const leases: Array<[taskSeq: number, workerId: string, sessionId: string]> = [];
    // Requests by label set, in request order (dealing.ts).
    const groups = groupByLabels(requests.map((r) => ({ labels: new Set(r.labels), free: r.freeSlots, room: r.maxTasks ?? 256 })));
    for (const group of groups) {
      // A task fit for several label sets is a candidate in each group: look past the ones
      // an earlier group was dealt, which are still queued until the lease statement runs.
      const limit = group.wanted + CLAIM_LOOKAHEAD + leases.length;
      for (const [id, slots] of this.queueCandidates(group.labels, group.maxFree, limit)) {
        if (group.open === 0) break;
        if (dealt.has(id)) continue;
        const request = group.take(slots);
        if (request < 0) continue;
        const { session } = requests[request]!;
        dealt.set(id, { request, slots, rank: leases.length });
        leases.push([id, session.workerId, session.sessionId]);
      }
    }
    if (leases.length === 0) return out;
    // One UPDATE leases the whole round, however many workers share it (the attempt rows are
    // written when the attempts end). Why: two statements per worker were two per task at
    // 64 x 1 (one task per worker per round), the largest single cost in the profiles
    // (docs/benchmarks.md).
    const rows = this.s.leaseTasks.all({ expires: now + this.leaseTtlMs, now }, leases) as LeasedRow[];
    // RETURNING has no defined order: restore the dealing order (queue order) of each share, by
    // placing each row at its rank (no sort: one map lookup per row, not two per comparison).
    const ranked = new Array<LeasedRow | undefined>(leases.length);
    for (const row of rows) ranked[dealt.get(row[0])!.rank] = row;
    const perJob = new Map<number, number>();
    for (const row of ranked) {
      if (row === undefined) continue; // dealt, but no longer queued when the lease ran
      const [id, jobSeq, key, attempt, spec, leaseId, queuedAt] = row;
      const { request, slots } = dealt.get(id)!;
      perJob.set(jobSeq, (perJob.get(jobSeq) ?? 0) + 1);
      out[request]!.push({ taskId: formatTaskId(id), jobId: formatJobId(jobSeq), key, attempt, leaseId, slots, specJson: spec, queuedAt });
    }
    for (const [jobSeq, n] of perJob) this.applyCounts(jobSeq, { queued: -n, running: n });
    return out;
  }

  /**
   * Queued tasks that a worker with these labels and this many free slots could take, in queue
   * order: the first `limit` of each class it can take, merged. Classes it cannot take cost
   * nothing, however many tasks they hold.
   */
  private queueCandidates(labels: ReadonlySet<string>, freeSlots: number, limit: number): Array<[id: number, slots: number, priority: number]> {
    type Row = [id: number, slots: number, priority: number];
    const classes = (this.queueClasses ??= this.readQueueClasses());
    let rows: Row[] = [];
    let walked = 0;
    for (const c of classes.takeable(labels, freeSlots)) {
      const got = this.s.queueOfClass.all(c.requires, c.slots, limit) as Row[];
      if (got.length === 0) {
        classes.delete(c.requires, c.slots); // emptied since it was noted; noteQueued brings it back
        continue;
      }
      rows = walked++ === 0 ? got : rows.concat(got);
    }
    // Several classes: merge into queue order (each walk is in it already). Every walk's rows
    // are kept: cutting the merge at `limit` dropped a one-slot task queued behind a run of wide
    // ones that only some of the group could take, and a one-slot worker then got nothing, was
    // marked starved by the dispatcher, and idled beside a task it could run.
    if (walked > 1) rows.sort((a, b) => b[2] - a[2] || a[0] - b[0]);
    return rows;
  }

  /** The classes present in the queue, from the index: a seek per class, not a scan. */
  private readQueueClasses(): QueueClasses {
    const classes = new QueueClasses();
    type ClassRow = [requires: string | null, slots: number] | undefined;
    let row = this.s.firstQueueClass.get() as ClassRow;
    while (row) {
      const [requires, slots] = row;
      classes.add(requires, slots);
      // The next slots value with the same labels, else the next labels ('' sorts before
      // every stored requires, which is a JSON array).
      row = (this.s.nextQueueClassSlots.get(requires, slots) ?? this.s.nextQueueClassRequires.get(requires ?? '')) as ClassRow;
    }
    return classes;
  }

  /** Every path that puts a task in the queue tells the class set here. */
  private noteQueued(requires: string | null, slots: number): void {
    this.queueClasses?.add(requires, slots);
  }

  /** Extends every lease held by a worker session to now + TTL. Returns how many. */
  extendLeases(session: SessionRef): number {
    const now = this.clock.now();
    this.s.touchWorker.run(now, session.workerId);
    return this.s.extendLeases.run(now + this.leaseTtlMs, session.workerId, session.sessionId).changes;
  }

  /**
   * Records the end of one execution, fenced by the lease: success if it exited 0 within its
   * timeout, else a failure that requeues while retries remain. Returns `stale` (changing
   * nothing) when `leaseId` is not the task's current lease or the task is not this worker's.
   */
  reportExecution(workerId: string, lease: LeaseRef, report: ExecutionReport): ReportOutcome {
    return isSuccess(report) ? this.completeTask(workerId, lease, report) : this.failTask(workerId, lease, report);
  }

  /**
   * Settles many reports at once (the worker channel's results of one group commit), with the
   * same outcome, report by report, as calling reportExecution for each in order.
   *
   * Why: per report, completion took five statements (the fenced update, the attempt, the
   * worker's and the job's counters, the finished-job check): the largest cost at 8 x 16 in the
   * profiles. Here successes are fenced and written by one statement (their attempts need no
   * rows: completeAll), and counters and finished-job checks run once per worker and per job.
   * Failures, and reports that name a task twice in one batch, take the one-by-one path
   * after the batch: they are rare, and the order between two reports on one task matters.
   */
  settleReports(items: readonly ReportItem[]): ReportOutcome[] {
    const out: ReportOutcome[] = new Array<ReportOutcome>(items.length);
    const seen = new Map<number, number>();
    for (const it of items) seen.set(it.lease.taskSeq, (seen.get(it.lease.taskSeq) ?? 0) + 1);
    const batch: number[] = [];
    const oneByOne: number[] = [];
    items.forEach((it, i) => (isSuccess(it.report) && seen.get(it.lease.taskSeq) === 1 ? batch : oneByOne).push(i));
    if (batch.length > 0) {
      const completed = this.completeAll(batch.map((i) => items[i]!));
      batch.forEach((i, k) => (out[i] = completed[k]!));
    }
    for (const i of oneByOne) {
      const it = items[i]!;
      out[i] = this.reportExecution(it.workerId, it.lease, it.report);
    }
    return out;
  }

  /**
   * Marks a leased task succeeded; `report` is a success (isSuccess). Returns `stale` if the
   * lease is not current.
   */
  completeTask(workerId: string, lease: LeaseRef, report: ExecutionReport): ReportOutcome {
    return this.completeAll([{ workerId, lease, report }])[0]!;
  }

  /**
   * Marks leased tasks succeeded, each fenced by its lease (no task twice in `items`): one
   * statement completes them all, and the workers' and jobs' counters and the finished-job
   * checks run once per worker and per job. A succeeded attempt gets no attempt row: it is the
   * task row's own, as the running attempt is (ownAttempt).
   *
   * Why: the row was one more b-tree insert per task on the dispatch hot path, and everything
   * it held is already in the task row (worker, start, end; a success exits 0 with no error).
   * store-micro 8 x 16: +4-6% tasks/s (docs/benchmarks.md). A succeeded task never leaves that
   * state, so no later attempt can need the row.
   */
  private completeAll(items: readonly ReportItem[]): ReportOutcome[] {
    const now = this.clock.now();
    const reports = items.map((it) => [it.lease.taskSeq, it.lease.leaseId, it.workerId, encodeResult(toTaskResult(it.report, null))]);
    const rows = this.s.completeLeasedBatch.all({ now }, reports) as Array<[id: number, jobSeq: number, workerId: string]>;
    const done = new Map<number, number>(); // task id -> job seq
    const perJob = new Map<number, number>();
    const perWorker = new Map<string, number>();
    for (const [id, jobSeq, workerId] of rows) {
      done.set(id, jobSeq);
      perJob.set(jobSeq, (perJob.get(jobSeq) ?? 0) + 1);
      perWorker.set(workerId, (perWorker.get(workerId) ?? 0) + 1);
    }
    this.s.addWorkersSucceeded.run({}, [...perWorker]);
    for (const [jobSeq, n] of perJob) {
      this.applyCounts(jobSeq, { running: -n, succeeded: n });
      this.finishJobIfDone(jobSeq, now);
    }
    return items.map((it) => {
      const jobSeq = done.get(it.lease.taskSeq);
      return jobSeq !== undefined ? { status: 'recorded', taskState: 'succeeded', jobId: formatJobId(jobSeq), requeued: false } : { status: 'stale' };
    });
  }

  /**
   * Records a failed execution (non-zero exit, signal, timeout, spawn error). Requeues the task
   * while `retries` remain, else fails it. Returns `stale` if the lease is not current.
   */
  failTask(workerId: string, lease: LeaseRef, report: ExecutionReport): ReportOutcome {
    const row = this.currentLease(workerId, lease);
    if (!row) return { status: 'stale' };
    const now = this.clock.now();
    const error = failureError(report);
    this.endAttempt(row, now, report.timedOut ? 'timed-out' : 'failed', report.exitCode, error);
    this.s.bumpWorkerFailed.run(workerId);
    const result = encodeResult(toTaskResult(report, error));
    if (row.failures < row.retries) {
      this.s.requeueAfterFailure.run(result, now, row.id);
      this.noteQueued(row.requires, row.slots);
      this.applyCounts(row.job_id, { running: -1, queued: 1 });
      return { status: 'recorded', taskState: 'queued', jobId: formatJobId(row.job_id), requeued: true };
    }
    this.s.failTerminal.run(now, result, row.id);
    this.applyCounts(row.job_id, { running: -1, failed: 1 });
    this.finishJobIfDone(row.job_id, now);
    return { status: 'recorded', taskState: 'failed', jobId: formatJobId(row.job_id), requeued: false };
  }

  /**
   * Gives a leased task back unfinished (drain, preemption, an unhealthy worker): requeued without spending a
   * retry, counted as an infrastructure loss. Returns `stale` if the lease is not current.
   */
  releaseTask(workerId: string, lease: LeaseRef, reason: ReleaseReason): ReportOutcome {
    const row = this.currentLease(workerId, lease);
    if (!row) return { status: 'stale' };
    const state = this.loseTask(row, 'released', `released by worker (${reason})`, this.clock.now());
    return { status: 'recorded', taskState: state, jobId: formatJobId(row.job_id), requeued: state === 'queued' };
  }

  /**
   * Requeues tasks whose lease expired (their worker vanished) without spending a retry;
   * a task lost more than MAX_LOSSES times fails with WORKER_LOST. Handles up to `limit`.
   */
  requeueExpired(limit = 1_000): LostTasks {
    const now = this.clock.now();
    return this.loseAll(this.s.expiredLeases.all(now, limit) as TaskRow[], (row) => `lease expired on worker ${row.worker_id ?? '?'}`, now);
  }

  /**
   * Requeues every task a worker still holds, at once, as infrastructure losses (the worker said
   * bye or was declared gone).
   */
  requeueWorkerTasks(workerId: string, reason: string): LostTasks {
    return this.loseAll(this.s.runningTasksOfWorker.all(workerId) as TaskRow[], () => reason, this.clock.now());
  }

  /**
   * Requeues, as infrastructure losses (no retry spent), the leases a worker holds under sessions
   * other than this one. Called at a new session's first pull, once the worker has listed what
   * it holds and re-sent what it finished (protocol TAKE_BACK_SINCE): any other lease of it is a
   * task it never got. Without this such a task waited a whole lease TTL.
   */
  requeueUnheld(session: SessionRef): LostTasks {
    return this.loseAll(this.s.leasesOfOtherSessions.all(session.workerId, session.sessionId) as TaskRow[], () => 'not on its worker when it reconnected', this.clock.now());
  }

  /**
   * Takes back, as infrastructure losses (no retry spent), leases claimed for a session that
   * closed before their `tasks` frame was written: the worker never saw them. Leases no longer
   * current are left alone.
   */
  requeueUndelivered(workerId: string, leases: readonly LeaseRef[]): LostTasks {
    const rows = leases.map((l) => this.currentLease(workerId, l)).filter((r) => r !== undefined);
    return this.loseAll(rows, () => 'not delivered: its session closed before the task was sent', this.clock.now());
  }

  /** Takes back each task as a loss; counts the requeued and the failed (past MAX_LOSSES). */
  private loseAll(rows: readonly TaskRow[], message: (row: TaskRow) => string, now: number): LostTasks {
    const out: LostTasks = { requeued: 0, failed: 0 };
    for (const row of rows) {
      if (this.loseTask(row, 'lost', message(row), now) === 'queued') out.requeued++;
      else out.failed++;
    }
    return out;
  }

  /**
   * After a reconnect: the new session takes over the listed leases that are still current
   * and this worker's. Returns the task ids resumed, and those whose leases are gone.
   */
  resumeLeases(session: SessionRef, leases: ReadonlyArray<{ taskSeq: number | null; taskId: string; leaseId: string }>): { resumed: string[]; lost: string[] } {
    const expires = this.clock.now() + this.leaseTtlMs;
    const resumed: string[] = [];
    const lost: string[] = [];
    for (const l of leases) {
      const ok = l.taskSeq !== null && this.s.resumeLease.run(session.sessionId, expires, l.taskSeq, l.leaseId, session.workerId).changes === 1;
      (ok ? resumed : lost).push(l.taskId);
    }
    return { resumed, lost };
  }

  private currentLease(workerId: string, lease: LeaseRef): TaskRow | undefined {
    return this.s.currentLease.get(lease.taskSeq, lease.leaseId, workerId) as TaskRow | undefined;
  }

  /** One infrastructure loss: requeue, or fail with WORKER_LOST past the cap. */
  private loseTask(row: TaskRow, outcome: 'lost' | 'released', message: string, now: number): TaskState {
    this.endAttempt(row, now, outcome, null, { code: 'WORKER_LOST', message });
    if (row.losses < MAX_LOSSES) {
      this.s.requeueAfterLoss.run(now, row.id);
      this.noteQueued(row.requires, row.slots);
      this.applyCounts(row.job_id, { running: -1, queued: 1 });
      return 'queued';
    }
    const error: ErrorInfo = { code: 'WORKER_LOST', message: `lost ${row.losses + 1} times to infrastructure (last: ${message})` };
    const result: TaskResult = { exitCode: null, signal: null, durationMs: 0, stdoutTail: '', stderrTail: '', output: null, error };
    this.s.failLost.run(now, encodeResult(result), row.id);
    this.applyCounts(row.job_id, { running: -1, failed: 1 });
    this.finishJobIfDone(row.job_id, now);
    return 'failed';
  }

  /**
   * Records an attempt that ended. Attempt rows are written once, when the attempt ends; the
   * running attempt is the task row's own (`attempts`, `worker_id`, `started_at`), so a claim
   * writes no attempt row (migration 3), and so is a succeeded one (completeAll, ownAttempt).
   */
  private endAttempt(run: RunningAttempt, now: number, outcome: AttemptOutcome, exitCode: number | null, error: ErrorInfo | null): void {
    this.s.insertEndedAttempt.run(run.id, run.attempts, run.worker_id, run.started_at ?? now, now, outcome, exitCode, error ? JSON.stringify(error) : null);
  }

  // ---- workers -------------------------------------------------------------------------------

  /**
   * Registers a worker session from its hello. Reuses the record when the hello names a known
   * worker id from the same host (hostname, and VM id when both sides have one), else creates
   * one. Returns the worker id.
   *
   * Why the host check: a VM image baked after the worker ran once carries its `worker-id` file,
   * so every VM made from it would claim one id. Each session replaced the last (close 4409),
   * they reconnected in turn, and each one's leases expired unextended under the other's
   * session. A new id per host ends that; the worker keeps the id its welcome names. A hello
   * without VM facts (IMDS unreachable at that start) keeps the stored ones: the worker is still
   * on that VM, and the check above keeps its VM id to compare.
   */
  registerWorker(hello: HelloMessage, sessionId: string): string {
    const now = this.clock.now();
    const stored = hello.workerId === undefined ? undefined : (this.s.getWorkerHost.get(hello.workerId) as { hostname: string; vm_id: string | null } | undefined);
    const sameHost = stored !== undefined && stored.hostname === hello.hostname && (stored.vm_id === null || hello.vm === null || stored.vm_id === hello.vm.vmId);
    const workerId = sameHost ? hello.workerId! : `w-${randomUUID().slice(0, 13).replace('-', '')}`;
    this.s.upsertWorker.run({
      id: workerId,
      name: hello.name,
      hostname: hello.hostname,
      slots: hello.slots,
      labels: JSON.stringify(hello.labels),
      vm: hello.vm ? JSON.stringify(hello.vm) : null,
      version: hello.version,
      session_id: sessionId,
      now,
    });
    return workerId;
  }

  /**
   * Records why a connected worker takes no work (it reported a problem), or that it takes work
   * again (null). While the problem stands, the worker is shown `unhealthy` instead of ready or
   * busy. A new session (registerWorker) clears it: the worker says it again if it still holds.
   */
  setWorkerProblem(workerId: string, problem: string | null): void {
    this.s.setWorkerProblem.run(problem, workerId);
  }

  /** Records a problem for a worker that has none recorded (a more precise one stays). */
  noteWorkerProblem(workerId: string, problem: string): void {
    this.s.noteWorkerProblem.run(problem, workerId);
  }

  /** Sets a worker's stored state; `offline` also records since when. */
  setWorkerState(workerId: string, state: StoredWorkerState): void {
    this.s.setWorkerState.run(state, state === 'offline' ? this.clock.now() : null, workerId);
  }

  getWorker(workerId: string): Worker | null {
    const row = this.s.getWorkerWithSlots.get(workerId) as WorkerRow | undefined;
    return row ? workerFromRow(row) : null;
  }

  listWorkers(): Worker[] {
    return (this.s.listWorkers.all() as WorkerRow[]).map(workerFromRow);
  }

  /** Workers offline since before `cutoff`: the reaper declares them gone. */
  workersOfflineSince(cutoff: number): string[] {
    return (this.s.offlineWorkersBefore.all(cutoff) as Array<{ id: string }>).map((r) => r.id);
  }

  /** At manager start, no session survives: every connected worker is offline until it returns. */
  markAllWorkersOffline(): number {
    return this.s.markAllOffline.run(this.clock.now()).changes;
  }

  /**
   * At manager start: every running lease gets at least one more TTL, so workers that were
   * cut off by the restart can reconnect and resume before the reaper calls their tasks lost.
   * Returns how many leases were extended.
   */
  extendAllLeasesForRestart(): number {
    return this.s.graceLeases.run(this.clock.now() + this.leaseTtlMs).changes;
  }

  // ---- statistics ----------------------------------------------------------------------------

  /** Task counts by state over all jobs, from the job counters (no task scan). */
  taskCounts(): Record<TaskState, number> {
    const r = this.s.taskTotals.get() as Record<TaskState, number | null>;
    return { queued: r.queued ?? 0, running: r.running ?? 0, succeeded: r.succeeded ?? 0, failed: r.failed ?? 0, cancelled: r.cancelled ?? 0 };
  }

  jobCounts(): Record<JobState, number> {
    const out: Record<JobState, number> = { active: 0, succeeded: 0, failed: 0, cancelled: 0 };
    for (const r of this.s.jobTotals.all() as Array<{ state: JobState; n: number }>) out[r.state] = r.n;
    return out;
  }

  /** Whether any task is queued (cheap: one index probe). */
  hasQueued(): boolean {
    return this.s.anyQueued.get() !== undefined;
  }

  // ---- bookkeeping ---------------------------------------------------------------------------

  private applyCounts(jobSeq: number, d: CountDelta): void {
    this.s.applyCounts.run(d.queued ?? 0, d.running ?? 0, d.succeeded ?? 0, d.failed ?? 0, d.cancelled ?? 0, jobSeq);
  }

  /** A sealed, active job whose tasks are all terminal ends: succeeded iff none failed or was cancelled. */
  private finishJobIfDone(jobSeq: number, now: number): void {
    this.s.finishJob.run(now, jobSeq);
  }

  private mustGetJob(jobSeq: number): Job {
    const job = this.getJob(jobSeq);
    if (!job) throw new PullmanError('JOB_NOT_FOUND', `job ${formatJobId(jobSeq)} does not exist`);
    return job;
  }
}

/**
 * Deals a submission's tasks to the takers (null: not taking) in queue order, priority first,
 * then submission order: each task to the first label set that has the labels it requires and a
 * member with room for it (dealing.ts), as claimBatch deals the queue. Returns, per spec, the
 * taker and the task's place in the dealing order, or undefined.
 *
 * The label sets that can take a class of task (its required labels and slots) are found once
 * per class, and a class that found no room is not tried again: free slots only shrink while
 * dealing. So a thousand tasks that thousands of waiting workers cannot take (GPU work,
 * host-labelled workers) cost one check per label set, not one per task and label set.
 */
function dealSubmission(specs: readonly TaskSpec[], takers: ReadonlyArray<Taker | null>): Array<{ request: number; rank: number } | undefined> {
  const out = new Array<{ request: number; rank: number } | undefined>(specs.length);
  const groups = groupByLabels(takers);
  let open = groups.reduce((n, g) => n + g.open, 0);
  // Class key -> the groups that can take it, or null once none has room for it.
  const fitting = new Map<string, LabelGroup[] | null>();
  const order = specs.map((_, i) => i).sort((a, b) => (specs[b]!.priority ?? 0) - (specs[a]!.priority ?? 0) || a - b);
  let rank = 0;
  for (const i of order) {
    if (open === 0) break; // every taker is full
    const slots = specs[i]!.slots ?? 1;
    const requires = specs[i]!.requires ?? [];
    const key = `${slots}\n${requires.join('\n')}`;
    let candidates = fitting.get(key);
    if (candidates === undefined) fitting.set(key, (candidates = groups.filter((g) => requires.every((l) => g.labels.has(l)))));
    if (candidates === null) continue;
    const dealtTo = candidates.find((g) => {
      const before = g.open;
      const request = g.take(slots);
      if (request < 0) return false;
      open -= before - g.open;
      out[i] = { request, rank: rank++ };
      return true;
    });
    if (dealtTo === undefined) fitting.set(key, null);
  }
  return out;
}

/** Methods that run in a transaction of their own (a savepoint when nested). */
const TRANSACTIONAL = [
  'createJob', 'submitTasks', 'sealJob', 'cancelJob', 'retryJob', 'cancelTask', 'claimTasks', 'claimBatch', 'extendLeases',
  'completeTask', 'failTask', 'reportExecution', 'settleReports', 'releaseTask', 'requeueExpired', 'requeueWorkerTasks', 'requeueUnheld', 'requeueUndelivered', 'resumeLeases',
  'registerWorker', 'setWorkerState', 'setWorkerProblem', 'noteWorkerProblem', 'markAllWorkersOffline', 'extendAllLeasesForRestart',
] as const satisfies ReadonlyArray<keyof TaskStore>;

/** One prepared statement per state, each with its state as a literal (states are constants). */
function perState<S extends TaskState, T>(states: readonly S[], make: (state: S) => T): Record<S, T> {
  return Object.fromEntries(states.map((state) => [state, make(state)])) as Record<S, T>;
}

function prepare(db: Database.Database) {
  const p = (sql: string) => db.prepare(sql);
  // Rows as arrays, for the dispatch hot path: a row object with named keys cost ~1 µs per
  // leased task (bench/store-micro.ts; about 5% of the manager's CPU at 8 x 16).
  const raw = (sql: string) => db.prepare(sql).raw(true);
  const batch = (width: number, sql: (values: string) => string, rawRows = true) => new BatchStatement(db, width, sql, rawRows);
  return {
    insertJob: p(`INSERT INTO jobs (name, state, sealed, defaults, created_at) VALUES (?, 'active', 0, ?, ?)`),
    getJob: p(`SELECT * FROM jobs WHERE id = ?`),
    sealJob: p(`UPDATE jobs SET sealed = 1 WHERE id = ?`),
    setJobState: p(`UPDATE jobs SET state = ?, finished_at = ? WHERE id = ?`),
    reactivateJob: p(`UPDATE jobs SET state = 'active', finished_at = NULL WHERE id = ? AND state <> 'active'`),
    addSubmitted: p(`UPDATE jobs SET n_queued = n_queued + ?, n_running = n_running + ?, state = 'active', finished_at = NULL WHERE id = ?`),
    finishJob: p(`
      UPDATE jobs SET state = CASE WHEN n_failed + n_cancelled = 0 THEN 'succeeded' ELSE 'failed' END, finished_at = ?
      WHERE id = ? AND state = 'active' AND sealed = 1 AND n_queued = 0 AND n_running = 0`),
    applyCounts: p(`
      UPDATE jobs SET n_queued = n_queued + ?, n_running = n_running + ?, n_succeeded = n_succeeded + ?,
                      n_failed = n_failed + ?, n_cancelled = n_cancelled + ?
      WHERE id = ?`),
    listJobs: p(`SELECT * FROM jobs WHERE id < ? ORDER BY id DESC LIMIT ?`),
    listJobsByState: p(`SELECT * FROM jobs WHERE state = ? AND id < ? ORDER BY id DESC LIMIT ?`),
    jobTotals: p(`SELECT state, count(*) AS n FROM jobs GROUP BY state`),
    taskTotals: p(`SELECT sum(n_queued) AS queued, sum(n_running) AS running, sum(n_succeeded) AS succeeded,
                          sum(n_failed) AS failed, sum(n_cancelled) AS cancelled FROM jobs`),

    insertTask: p(`
      INSERT INTO tasks (job_id, key, state, priority, slots, requires, spec, retries, created_at)
      VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?)
      ON CONFLICT (job_id, key) WHERE key IS NOT NULL DO NOTHING`),
    // A submitted task handed straight to a waiting worker: inserted as leaseTasks leaves it.
    insertLeasedTask: raw(`
      INSERT INTO tasks (job_id, key, state, priority, slots, requires, spec, retries, created_at,
                         lease_id, lease_expires_at, worker_id, session_id, attempts, started_at)
      VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, lower(hex(randomblob(16))), ?, ?, ?, 1, ?)
      ON CONFLICT (job_id, key) WHERE key IS NOT NULL DO NOTHING
      RETURNING id, lease_id`),
    getTask: p(`SELECT * FROM tasks WHERE id = ?`),
    listTasks: p(`SELECT * FROM tasks WHERE job_id = ? AND id > ? ORDER BY id LIMIT ?`),
    // One statement per state, the state a literal: SQLite uses a partial index (migration 7)
    // only for a query whose WHERE contains the index's own condition (perState).
    listTasksIn: perState(TASK_STATES, (state) => p(`SELECT * FROM tasks WHERE job_id = ? AND state = '${state}' AND id > ? ORDER BY id LIMIT ?`)),
    terminalOfJobIn: perState(TERMINAL_TASK_STATES, (state) => p(`SELECT id, key, state, attempts, result FROM tasks WHERE job_id = ? AND state = '${state}' AND id > ? ORDER BY id LIMIT ?`)),
    attemptsOfTask: p(`SELECT * FROM attempts WHERE task_id = ? ORDER BY attempt`),
    anyQueued: p(`SELECT 1 FROM tasks WHERE state = 'queued' LIMIT 1`),

    // One class of the queue in queue order (priority first, then FIFO): a seek into
    // tasks_queue_class and a walk of `limit` entries of it, whatever else is queued.
    queueOfClass: raw(`
      SELECT id, slots, priority FROM tasks
      WHERE state = 'queued' AND requires IS ? AND slots = ?
      ORDER BY priority DESC, id
      LIMIT ?`),
    // The classes present in the queue, read as a skip scan of tasks_queue_class: the first,
    // then from each the next, one index seek per class (NULL requires sorts first).
    firstQueueClass: raw(`SELECT requires, slots FROM tasks WHERE state = 'queued' ORDER BY requires, slots LIMIT 1`),
    queuedClassesOfJob: raw(`SELECT DISTINCT requires, slots FROM tasks WHERE job_id = ? AND state = 'queued'`),
    nextQueueClassSlots: raw(`
      SELECT requires, slots FROM tasks WHERE state = 'queued' AND requires IS ? AND slots > ? ORDER BY slots LIMIT 1`),
    nextQueueClassRequires: raw(`
      SELECT requires, slots FROM tasks WHERE state = 'queued' AND requires > ? ORDER BY requires, slots LIMIT 1`),
    // Leases a dispatch round; rows are [task id, worker id, session id] (batch.ts). The lease id
    // is 128 random bits made by SQLite, so the round needs no per-task call from JS.
    leaseTasks: batch(3, (values) => `
      UPDATE tasks SET state = 'running', lease_id = lower(hex(randomblob(16))), lease_expires_at = @expires, worker_id = l.column2,
                       session_id = l.column3, attempts = attempts + 1, started_at = @now
      FROM (VALUES ${values}) AS l
      WHERE tasks.id = l.column1 AND tasks.state = 'queued'
      RETURNING tasks.id, job_id, key, attempts, spec, lease_id, coalesce(queued_at, created_at) AS queued_at`),
    insertEndedAttempt: p(`
      INSERT INTO attempts (task_id, attempt, worker_id, started_at, ended_at, outcome, exit_code, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
    extendLeases: p(`UPDATE tasks SET lease_expires_at = ? WHERE worker_id = ? AND session_id = ? AND state = 'running'`),
    // Only the columns a report needs: spec and result can be large.
    currentLease: p(`
      SELECT id, job_id, attempts, failures, retries, losses, worker_id, started_at, requires, slots FROM tasks
      WHERE id = ? AND lease_id = ? AND worker_id = ? AND state = 'running'`),
    resumeLease: p(`
      UPDATE tasks SET session_id = ?, lease_expires_at = ?
      WHERE id = ? AND lease_id = ? AND worker_id = ? AND state = 'running'`),
    // Fences and completes many leases; rows are [task id, lease id, worker id, result as JSON
    // text]. Only current leases match.
    completeLeasedBatch: batch(4, (values) => `
      UPDATE tasks SET state = 'succeeded', finished_at = @now, result = r.column4, lease_id = NULL, lease_expires_at = NULL, session_id = NULL
      FROM (VALUES ${values}) AS r
      WHERE tasks.id = r.column1 AND tasks.lease_id = r.column2 AND tasks.worker_id = r.column3 AND tasks.state = 'running'
      RETURNING tasks.id, job_id, worker_id`),
    setTaskTerminal: p(`
      UPDATE tasks SET state = ?, finished_at = ?, result = coalesce(?, result), lease_id = NULL, lease_expires_at = NULL, session_id = NULL
      WHERE id = ?`),
    requeueAfterFailure: p(`
      UPDATE tasks SET state = 'queued', failures = failures + 1, result = ?, queued_at = ?, lease_id = NULL, lease_expires_at = NULL, session_id = NULL
      WHERE id = ?`),
    failTerminal: p(`
      UPDATE tasks SET state = 'failed', failures = failures + 1, finished_at = ?, result = ?, lease_id = NULL, lease_expires_at = NULL, session_id = NULL
      WHERE id = ?`),
    requeueAfterLoss: p(`
      UPDATE tasks SET state = 'queued', losses = losses + 1, queued_at = ?, lease_id = NULL, lease_expires_at = NULL, session_id = NULL
      WHERE id = ?`),
    failLost: p(`
      UPDATE tasks SET state = 'failed', losses = losses + 1, finished_at = ?, result = ?, lease_id = NULL, lease_expires_at = NULL, session_id = NULL
      WHERE id = ?`),
    expiredLeases: p(`SELECT * FROM tasks WHERE state = 'running' AND lease_expires_at <= ? ORDER BY lease_expires_at LIMIT ?`),
    runningTasksOfWorker: p(`SELECT * FROM tasks WHERE state = 'running' AND worker_id = ?`),
    leasesOfOtherSessions: p(`SELECT * FROM tasks WHERE state = 'running' AND worker_id = ? AND session_id IS NOT ?`),
    runningTasksOfJob: p(`SELECT * FROM tasks WHERE job_id = ? AND state = 'running'`),
    cancelQueuedOfJob: p(`UPDATE tasks SET state = 'cancelled', finished_at = ? WHERE job_id = ? AND state = 'queued'`),
    cancelRunningOfJob: p(`
      UPDATE tasks SET state = 'cancelled', finished_at = ?, lease_id = NULL, lease_expires_at = NULL, session_id = NULL
      WHERE job_id = ? AND state = 'running'`),
    requeueOfJobIn: perState(['failed', 'cancelled'] as const, (state) => p(`
      UPDATE tasks SET state = 'queued', failures = 0, losses = 0, finished_at = NULL, queued_at = ?
      WHERE job_id = ? AND state = '${state}'`)),

    getWorkerHost: p(`SELECT hostname, json_extract(vm, '$.vmId') AS vm_id FROM workers WHERE id = ?`),
    upsertWorker: p(`
      INSERT INTO workers (id, name, hostname, state, slots, labels, vm, version, session_id, connected_at, last_heartbeat_at, created_at)
      VALUES (@id, @name, @hostname, 'ready', @slots, @labels, @vm, @version, @session_id, @now, @now, @now)
      ON CONFLICT (id) DO UPDATE SET name = @name, hostname = @hostname, state = 'ready', slots = @slots, labels = @labels,
        vm = coalesce(@vm, vm), version = @version, session_id = @session_id, connected_at = @now, last_heartbeat_at = @now, offline_since = NULL, problem = NULL`),
    setWorkerState: p(`UPDATE workers SET state = ?, offline_since = ? WHERE id = ?`),
    setWorkerProblem: p(`UPDATE workers SET problem = ? WHERE id = ?`),
    noteWorkerProblem: p(`UPDATE workers SET problem = coalesce(problem, ?) WHERE id = ?`),
    touchWorker: p(`UPDATE workers SET last_heartbeat_at = ? WHERE id = ?`),
    // Rows are [worker id, successes]: one statement for every worker of a flush.
    addWorkersSucceeded: batch(2, (values) => `
      UPDATE workers SET tasks_succeeded = tasks_succeeded + c.column2 FROM (VALUES ${values}) AS c WHERE workers.id = c.column1`, false),
    bumpWorkerFailed: p(`UPDATE workers SET tasks_failed = tasks_failed + 1 WHERE id = ?`),
    getWorkerWithSlots: p(`
      SELECT w.*, (SELECT coalesce(sum(slots), 0) FROM tasks t WHERE t.state = 'running' AND t.worker_id = w.id) AS used_slots
      FROM workers w WHERE w.id = ?`),
    listWorkers: p(`
      SELECT w.*, coalesce(u.used, 0) AS used_slots FROM workers w
      LEFT JOIN (SELECT worker_id, sum(slots) AS used FROM tasks WHERE state = 'running' GROUP BY worker_id) u ON u.worker_id = w.id
      ORDER BY w.created_at, w.id`),
    offlineWorkersBefore: p(`SELECT id FROM workers WHERE state = 'offline' AND offline_since <= ?`),
    graceLeases: p(`UPDATE tasks SET lease_expires_at = max(lease_expires_at, ?) WHERE state = 'running'`),
    markAllOffline: p(`UPDATE workers SET state = 'offline', offline_since = ?, session_id = NULL WHERE state IN ('ready','draining')`),
  };
}

// ---- row mapping -------------------------------------------------------------------------------

function jobFromRow(r: JobRow): Job {
  return {
    id: formatJobId(r.id),
    name: r.name,
    state: r.state,
    sealed: r.sealed === 1,
    createdAt: iso(r.created_at)!,
    finishedAt: iso(r.finished_at),
    counts: {
      queued: r.n_queued,
      running: r.n_running,
      succeeded: r.n_succeeded,
      failed: r.n_failed,
      cancelled: r.n_cancelled,
      total: r.n_queued + r.n_running + r.n_succeeded + r.n_failed + r.n_cancelled,
    },
  };
}

function taskFromRow(r: TaskRow): Task {
  return {
    id: formatTaskId(r.id),
    jobId: formatJobId(r.job_id),
    key: r.key,
    state: r.state,
    priority: r.priority,
    slots: r.slots,
    spec: JSON.parse(r.spec) as TaskSpec,
    attempts: r.attempts,
    createdAt: iso(r.created_at)!,
    startedAt: iso(r.started_at),
    finishedAt: iso(r.finished_at),
    workerId: r.worker_id,
    result: decodeResult(r.result),
  };
}

/**
 * The attempt the task row itself records, when it has no attempt row: the one it is running
 * (migration 3), or the one that succeeded (completeAll). Every other attempt gets its row
 * when it ends. A database written before the succeeded attempt lost its row still has that
 * row, and then the task row adds nothing.
 */
function ownAttempt(task: TaskRow, rows: readonly AttemptRow[]): Attempt | null {
  if (task.attempts === 0 || rows.some((r) => r.attempt === task.attempts)) return null;
  const startedAt = iso(task.started_at)!;
  if (task.state === 'running') return { attempt: task.attempts, workerId: task.worker_id, startedAt, endedAt: null, outcome: 'running', exitCode: null, error: null };
  if (task.state === 'succeeded') return { attempt: task.attempts, workerId: task.worker_id, startedAt, endedAt: iso(task.finished_at), outcome: 'succeeded', exitCode: 0, error: null };
  return null;
}

function attemptFromRow(r: AttemptRow): Attempt {
  return {
    attempt: r.attempt,
    workerId: r.worker_id,
    startedAt: iso(r.started_at)!,
    endedAt: iso(r.ended_at),
    outcome: r.outcome,
    exitCode: r.exit_code,
    error: parseJson<ErrorInfo>(r.error),
  };
}

function workerFromRow(r: WorkerRow): Worker {
  // ready is stored; busy and unhealthy are what a ready worker shows with used slots, or with a
  // problem (which wins: such a worker takes no work, whatever it still runs).
  const state: WorkerState = r.state !== 'ready' ? r.state : r.problem !== null ? 'unhealthy' : r.used_slots > 0 ? 'busy' : 'ready';
  return {
    id: r.id,
    name: r.name,
    hostname: r.hostname,
    state,
    slots: r.slots,
    usedSlots: r.used_slots,
    labels: JSON.parse(r.labels) as string[],
    vm: parseJson<VmFacts>(r.vm),
    version: r.version,
    problem: r.state === 'ready' ? r.problem : null,
    connectedAt: iso(r.connected_at),
    lastHeartbeatAt: iso(r.last_heartbeat_at),
    tasksSucceeded: r.tasks_succeeded,
    tasksFailed: r.tasks_failed,
  };
}

function toAssignment(t: ClaimedTask): TaskAssignment {
  return { taskId: t.taskId, jobId: t.jobId, key: t.key, attempt: t.attempt, leaseId: t.leaseId, spec: JSON.parse(t.specJson) as TaskSpec };
}

/** A report counts as success when the process exited 0, in time, uncancelled, without error. */
function isSuccess(report: ExecutionReport): boolean {
  return report.exitCode === 0 && !report.timedOut && !report.cancelled && report.error === null;
}

function failureError(report: ExecutionReport): ErrorInfo {
  if (report.error) return report.error;
  if (report.timedOut) return { code: 'TIMED_OUT', message: `timed out after ${report.durationMs}ms` };
  if (report.signal) return { code: 'NONZERO_EXIT', message: `killed by ${report.signal}` };
  return { code: 'NONZERO_EXIT', message: `exited with code ${report.exitCode}` };
}

/**
 * A TaskResult as stored in `tasks.result`: the fields at their defaults (no signal, empty
 * tails, no output, no error) are left out; exitCode and durationMs are always there.
 * decodeResult fills the rest in, and reads the complete form older releases wrote the same way.
 *
 * Why: every finished task writes one, and most batch tasks print nothing worth keeping. The
 * complete form of a silent success is ~110 bytes against ~30, and writing it cost 0.7 µs of
 * the ~4.3 µs a completion costs (bench/store-micro.ts 8 x 16: 95k -> 104k tasks/s).
 */
export function encodeResult(r: TaskResult): string {
  const stored: Partial<TaskResult> = { exitCode: r.exitCode, durationMs: r.durationMs };
  if (r.signal !== null) stored.signal = r.signal;
  if (r.stdoutTail !== '') stored.stdoutTail = r.stdoutTail;
  if (r.stderrTail !== '') stored.stderrTail = r.stderrTail;
  if (r.output !== null && r.output !== undefined) stored.output = r.output;
  if (r.error !== null) stored.error = r.error;
  return JSON.stringify(stored);
}

function decodeResult(json: string | null): TaskResult | null {
  const stored = parseJson<Partial<TaskResult>>(json);
  if (stored === null) return null;
  return { exitCode: null, signal: null, durationMs: 0, stdoutTail: '', stderrTail: '', output: null, error: null, ...stored };
}

function toTaskResult(report: ExecutionReport, error: ErrorInfo | null): TaskResult {
  // The worker caps output at 1 MiB; a misbehaving worker's larger output is dropped, not stored.
  let output = report.output ?? null;
  if (output !== null && JSON.stringify(output).length > MAX_OUTPUT_BYTES) output = null;
  return {
    exitCode: report.exitCode,
    signal: report.signal,
    durationMs: report.durationMs,
    stdoutTail: report.stdoutTail,
    stderrTail: report.stderrTail,
    output,
    error,
  };
}

// ---- pagination ----------------------------------------------------------------------------------

function paginate<R extends { id: number }, T>(rows: R[], limit: number, map: (r: R) => T): Page<T> {
  const more = rows.length > limit;
  const page = more ? rows.slice(0, limit) : rows;
  return { items: page.map(map), nextCursor: more ? encodeCursor(page[page.length - 1]!.id) : null };
}

// Cursors are opaque to clients; today they are the last row id in base36, prefixed so that a
// future format can be told apart.
const encodeCursor = (id: number): string => `c${id.toString(36)}`;
function decodeCursor(cursor: string): number {
  const n = /^c[0-9a-z]{1,12}$/.test(cursor) ? parseInt(cursor.slice(1), 36) : NaN;
  if (!Number.isSafeInteger(n)) throw new PullmanError('INVALID_INPUT', `cursor: ${JSON.stringify(cursor)} is not a cursor returned by this API`);
  return n;
}
