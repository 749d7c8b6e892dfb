/**
 * Group commit: store writes that arrive in the same event-loop turn (claims, results,
 * heartbeats, submissions) run in one SQLite transaction, and each caller's promise settles
 * only after that transaction commits. Nothing is acknowledged before it is durable.
 *
 * Why: a commit's fixed cost (WAL frame writes, and an fsync with db-sync=full) dominates a
 * one-row update; sharing it across a turn's worth of work is what makes the manager fast
 * under a thousand chattering workers. Each operation runs in its own savepoint, so one that
 * throws (bad input, a sealed job) fails alone; the worker channel's hot operations (claims,
 * reports, heartbeats: single store calls that throw only on database failure, which aborts
 * the batch anyway) skip the savepoint, which measured ~10% of manager CPU under load.
 */
import type { TaskStore } from '@pullman/store';
import { coerceError } from '@pullman/protocol';

interface Pending {
  op: () => unknown;
  savepoint: boolean;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
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
  readonly stats: CommitStats = { transactions: 0, operations: 0 };

  constructor(private readonly store: TaskStore) {}

  /**
   * Queues a write for the next group commit; resolves with its result after the commit.
   * `savepoint: false` is for single store calls that write nothing before they can throw.
   */
  run<T>(op: () => T, options: { savepoint?: boolean } = {}): Promise<T> {
    if (this.closed) return Promise.reject(new Error('committer is closed'));
    return new Promise<T>((resolve, reject) => {
      this.pending.push({ op, savepoint: options.savepoint ?? true, resolve: resolve as (v: unknown) => void, reject });
      this.schedule();
    });
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
    // arrived together joins the batch.
    setImmediate(() => this.flush());
  }

  /** Commits what is pending now (used at shutdown); later calls are rejected. */
  close(): void {
    this.flush();
    this.closed = true;
  }

  private flush(): void {
    this.scheduled = false;
    const batch: Pending[] = [];
    const outcomes: Array<{ ok: true; value: unknown } | { ok: false; error: Error }> = [];
    const runPending = () => {
      const ops = this.pending;
      this.pending = [];
      batch.push(...ops); // all of them, so a failed commit rejects every caller
      for (const p of ops) {
        try {
          outcomes.push({ ok: true, value: p.savepoint ? this.store.transaction(p.op) : p.op() });
        } catch (err) {
          // SQLITE_FULL (and IOERR, NOMEM) roll back the whole transaction, not just the op's
          // savepoint. The batch is lost: stop here, or the ops after this one would each run
          // in autocommit and be stored while their callers are told the commit failed.
          if (!this.store.db.inTransaction) throw err;
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
      // The commit itself failed (e.g. disk full): nothing in the batch is durable.
      const error = coerceError(err);
      for (const p of [...batch, ...this.pending.splice(0)]) p.reject(error);
      return;
    } finally {
      this.flushing = false;
    }
    if (batch.length === 0) return;
    this.stats.transactions++;
    this.stats.operations += batch.length;
    batch.forEach((p, i) => {
      const o = outcomes[i]!;
      if (o.ok) p.resolve(o.value);
      else p.reject(o.error);
    });
  }

}
