/**
 * Group commit: store writes that arrive in the same event-loop turn (claims, results,
 * heartbeats, submissions) run in one SQLite transaction, and each caller's promise settles
 * only after that transaction commits. Nothing is acknowledged before it is durable.
 *
 * Why: a commit's fixed cost (WAL frame writes, and an fsync with db-sync=full) dominates a
 * one-row update; sharing it across a turn's worth of work is what makes the manager fast
 * under a thousand chattering workers. Each operation runs in its own savepoint, so one that
 * throws (bad input, a sealed job) fails alone. Hot operations (claims, reports, heartbeats,
 * appended tasks) skip the savepoint, which measured ~10% of manager CPU under load and two of
 * the submission's statements on the idle-latency path; see HOT for what they promise instead.
 */
import type { TaskStore } from '@pullman/store';
import { PullmanError, coerceError } from '@pullman/protocol';

/**
 * Options for an operation that runs without a savepoint. Its promise: it throws a PullmanError
 * (bad input, a sealed job) only before it writes anything, so that error fails it alone; any
 * other error (a database failure, possibly halfway through its writes) fails the whole batch,
 * which is rolled back, since what the operation left behind cannot be known.
 */
export const HOT = { savepoint: false } as const;

/**
 * After a flush fails, the next one runs this much later even if nothing new is queued, so the
 * hooks' work that rolled back with it (the dispatcher's claims) is tried again. Without it,
 * workers waiting for work after a transient disk-full waited until some other write came;
 * a second is long enough not to spin on a disk that stays full.
 */
export const RETRY_AFTER_FAILURE_MS = 1_000;

/** What became of one queued write once its group commit ended. */
export type Outcome<T> = { ok: true; value: T } | { ok: false; error: Error };

interface Pending {
  op: () => unknown;
  savepoint: boolean;
  settle: (outcome: Outcome<unknown>) => void;
  /** Settled synchronously right after the commit, before any promise of the batch resolves. */
  immediate: boolean;
}

export interface CommitStats {
  transactions: number;
  operations: number;
}

export class GroupCommitter {
  private pending: Pending[] = [];
  private scheduled = false;
  private readonly hooks: Array<() => void> = [];
  private flushing = false;
  private closed = false;
  private retry: NodeJS.Timeout | null = null;
  readonly stats: CommitStats = { transactions: 0, operations: 0 };

  /** `onSettleError` hears of a runThen callback that threw; the rest of the batch still settles. */
  constructor(
    private readonly store: TaskStore,
    private readonly onSettleError: (err: unknown) => void = () => {},
  ) {}

  /**
   * Queues a write for the next group commit; resolves with its result after the commit.
   * `savepoint: false` (HOT) is for store calls that keep HOT's promise.
   */
  run<T>(op: () => T, options: { savepoint?: boolean } = {}): Promise<T> {
    if (this.closed) return Promise.reject(new Error('committer is closed'));
    return new Promise<T>((resolve, reject) => {
      const settle = (o: Outcome<unknown>) => (o.ok ? resolve(o.value as T) : reject(o.error));
      this.pending.push({ op, savepoint: options.savepoint ?? true, settle, immediate: false });
      this.schedule();
    });
  }

  /**
   * Like run, but calls `settle` synchronously as soon as the commit ends, before the promises
   * of the batch resolve. The worker channel settles claims and results this way.
   *
   * Why: a promise continuation runs after every continuation queued before it, and an HTTP
   * submission's continuation (reply serialisation and write) took ~150 µs; the waiting worker's
   * task went out after it. Settled here, the frames are queued before any continuation runs and
   * leave on the next tick (docs/benchmarks.md, idle latency).
   */
  runThen<T>(op: () => T, settle: (outcome: Outcome<T>) => void, options: { savepoint?: boolean } = {}): void {
    if (this.closed) {
      settle({ ok: false, error: new Error('committer is closed') });
      return;
    }
    this.pending.push({ op, savepoint: options.savepoint ?? true, settle: settle as (o: Outcome<unknown>) => void, immediate: true });
    this.schedule();
  }

  /**
   * Registers work to run inside each flush, after the queued writes; the ops it queues join
   * the same transaction. The dispatcher claims here, so the results, pulls and submissions of
   * a turn and the claims they make possible share one commit instead of two.
   */
  afterWrites(hook: () => void): void {
    this.hooks.push(hook);
  }

  /** Makes sure a flush runs at the end of this turn, even with nothing queued yet. */
  schedule(): void {
    // Ops queued by a hook during a flush run in that flush.
    if (this.scheduled || this.closed || this.flushing) return;
    this.scheduled = true;
    // setImmediate runs after the I/O callbacks of this turn, so every message that
    // arrived together joins the batch. close() flushed what was queued before it.
    setImmediate(() => !this.closed && this.flush());
  }

  /**
   * Makes sure a flush runs in RETRY_AFTER_FAILURE_MS, even with nothing queued then, so the
   * hooks run again. Armed by every failed flush; the dispatcher also arms it when its claim
   * failed alone. Not sooner: a disk that stays full would otherwise be tried in a spin.
   */
  retryLater(): void {
    if (this.retry || this.closed) return;
    this.retry = setTimeout(() => {
      this.retry = null;
      this.schedule();
    }, RETRY_AFTER_FAILURE_MS);
    // Nothing to retry keeps a process alive that is otherwise done.
    this.retry.unref();
  }

  /** Commits what is pending now (used at shutdown); later calls are rejected. */
  close(): void {
    this.flush();
    this.closed = true;
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
  }

  private flush(): void {
    this.scheduled = false;
    const batch: Pending[] = [];
    const outcomes: Array<Outcome<unknown>> = [];
    const runPending = () => {
      const ops = this.pending;
      this.pending = [];
      batch.push(...ops); // all of them, so a failed commit rejects every caller
      for (const p of ops) {
        try {
          outcomes.push({ ok: true, value: p.savepoint ? this.store.transaction(p.op) : p.op() });
        } catch (err) {
          // SQLITE_FULL (and IOERR, NOMEM) can roll back the whole transaction, not just the op's
          // savepoint. The batch is lost: stop here, or the ops after this one would each run
          // in autocommit and be stored while their callers are told the commit failed.
          if (!this.store.db.inTransaction) throw err;
          // SQLite may also undo just the failing statement and keep the transaction. An op
          // without a savepoint may then have written half of its work: roll the batch back.
          if (!p.savepoint && !(err instanceof PullmanError)) throw err;
          outcomes.push({ ok: false, error: coerceError(err) });
        }
      }
    };
    this.flushing = true;
    try {
      this.store.transaction(() => {
        // First the writes that arrived, then the hooks (the dispatcher's claims), whose ops
        // see those writes and join the same commit: a submission reaches a waiting worker,
        // and a result's freed slot gets its next task, one commit later instead of two.
        runPending();
        for (const hook of this.hooks) hook();
        runPending();
      });
    } catch (err) {
      // The commit itself failed (e.g. disk full): nothing in the batch is durable, and the hooks
      // may not have run at all. They run again in the retry flush.
      const error = coerceError(err);
      if (this.hooks.length > 0) this.retryLater();
      this.settleAll([...batch, ...this.pending.splice(0)], () => ({ ok: false, error }));
      return;
    } finally {
      this.flushing = false;
    }
    if (batch.length === 0) return;
    this.stats.transactions++;
    this.stats.operations += batch.length;
    this.settleAll(batch, (i) => outcomes[i]!);
  }

  /**
   * The runThen callbacks first, synchronously (one that throws is reported and the rest still
   * run), then the promises of run().
   */
  private settleAll(ops: readonly Pending[], outcomeOf: (index: number) => Outcome<unknown>): void {
    ops.forEach((p, i) => {
      if (!p.immediate) return;
      try {
        p.settle(outcomeOf(i));
      } catch (err) {
        this.onSettleError(err);
      }
    });
    ops.forEach((p, i) => !p.immediate && p.settle(outcomeOf(i)));
  }
}
