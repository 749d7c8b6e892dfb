/**
 * Numbered, append-only schema migrations. Never edit a released one: add the next number.
 * Each runs in its own transaction and bumps PRAGMA user_version, so a crash mid-migration
 * leaves the database at the previous version, not half-way.
 */
export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'initial schema',
    sql: /* sql */ `
      CREATE TABLE jobs (
        id            INTEGER PRIMARY KEY,
        name          TEXT,
        state         TEXT NOT NULL CHECK (state IN ('active','succeeded','failed','cancelled')),
        sealed        INTEGER NOT NULL CHECK (sealed IN (0,1)),
        defaults      TEXT,
        created_at    INTEGER NOT NULL,
        finished_at   INTEGER,
        -- Counters are kept in step with the tasks table by every operation that moves a task,
        -- in the same transaction, so reading a job's progress never scans its tasks.
        n_queued      INTEGER NOT NULL DEFAULT 0,
        n_running     INTEGER NOT NULL DEFAULT 0,
        n_succeeded   INTEGER NOT NULL DEFAULT 0,
        n_failed      INTEGER NOT NULL DEFAULT 0,
        n_cancelled   INTEGER NOT NULL DEFAULT 0
      );
      CREATE INDEX jobs_state ON jobs (state, id);

      CREATE TABLE tasks (
        id               INTEGER PRIMARY KEY,
        job_id           INTEGER NOT NULL REFERENCES jobs (id),
        key              TEXT,
        state            TEXT NOT NULL CHECK (state IN ('queued','running','succeeded','failed','cancelled')),
        priority         INTEGER NOT NULL,
        slots            INTEGER NOT NULL,
        requires         TEXT,               -- JSON array of labels, NULL when none (the fast path)
        spec             TEXT NOT NULL,      -- the resolved TaskSpec as JSON
        retries          INTEGER NOT NULL,
        attempts         INTEGER NOT NULL DEFAULT 0,  -- executions started
        failures         INTEGER NOT NULL DEFAULT 0,  -- failed executions; compared with retries
        losses           INTEGER NOT NULL DEFAULT 0,  -- infrastructure losses; capped separately
        worker_id        TEXT,               -- worker of the latest attempt
        session_id       TEXT,               -- session holding the lease while running
        lease_id         TEXT,               -- the fencing token; NULL unless running
        lease_expires_at INTEGER,
        created_at       INTEGER NOT NULL,
        started_at       INTEGER,
        finished_at      INTEGER,
        result           TEXT                -- TaskResult JSON of the latest finished attempt
      );
      CREATE UNIQUE INDEX tasks_job_key ON tasks (job_id, key) WHERE key IS NOT NULL;
      -- The claim walks this partial index in order and stops after a few rows.
      CREATE INDEX tasks_queue ON tasks (priority DESC, id) WHERE state = 'queued';
      CREATE INDEX tasks_leases ON tasks (lease_expires_at) WHERE state = 'running';
      CREATE INDEX tasks_worker ON tasks (worker_id) WHERE state = 'running';
      CREATE INDEX tasks_job_state ON tasks (job_id, state, id);

      CREATE TABLE attempts (
        task_id     INTEGER NOT NULL,
        attempt     INTEGER NOT NULL,
        worker_id   TEXT,
        started_at  INTEGER NOT NULL,
        ended_at    INTEGER,
        outcome     TEXT NOT NULL,
        exit_code   INTEGER,
        error       TEXT,
        PRIMARY KEY (task_id, attempt)
      ) WITHOUT ROWID;

      CREATE TABLE workers (
        id                 TEXT PRIMARY KEY,
        name               TEXT NOT NULL,
        hostname           TEXT NOT NULL,
        state              TEXT NOT NULL CHECK (state IN ('ready','draining','offline','gone')),
        slots              INTEGER NOT NULL,
        labels             TEXT NOT NULL,
        vm                 TEXT,
        version            TEXT NOT NULL,
        session_id         TEXT,
        connected_at       INTEGER,
        last_heartbeat_at  INTEGER,
        offline_since      INTEGER,
        tasks_succeeded    INTEGER NOT NULL DEFAULT 0,
        tasks_failed       INTEGER NOT NULL DEFAULT 0,
        created_at         INTEGER NOT NULL
      );
    `,
  },
  {
    version: 2,
    name: 'tasks.queued_at',
    // When a task last entered the queue: set on every requeue, NULL until the first one
    // (then created_at is the answer). Feeds the dispatch latency histogram (queued to sent).
    sql: /* sql */ `
      ALTER TABLE tasks ADD COLUMN queued_at INTEGER;
    `,
  },
  {
    version: 3,
    name: 'attempt rows written when attempts end',
    // An attempt's row is inserted once, when it ends; the attempt in progress is read from the
    // task row (attempts, worker_id, started_at). Writing it at the claim and again at the end
    // cost a second b-tree write per task on the dispatch hot path (docs/benchmarks.md).
    sql: /* sql */ `
      DELETE FROM attempts WHERE outcome = 'running';
    `,
  },
  {
    version: 4,
    name: 'queue index by task class',
    // The queue ordered within each class of tasks (required labels, slots), not as one list.
    // Why: a claim walked the one list in priority order and skipped the tasks its workers
    // cannot take; behind 100,000 queued tasks needing a label (or more slots) that no waiting
    // worker has, every claim read all of them (~5 ms each, at every dispatch round). A claim
    // now walks only the classes its workers can take (see TaskStore.claimBatch).
    sql: /* sql */ `
      DROP INDEX IF EXISTS tasks_queue;
      CREATE INDEX IF NOT EXISTS tasks_queue_class ON tasks (requires, slots, priority DESC, id) WHERE state = 'queued';
    `,
  },
  {
    version: 5,
    name: 'workers.problem',
    // Why a connected worker takes no work (its work dir cannot hold a task), as it reported it
    // (protocol 3, `health`); NULL when it takes work. Cleared by each new session.
    sql: /* sql */ `
      ALTER TABLE workers ADD COLUMN problem TEXT;
    `,
  },
  {
    version: 6,
    name: 'succeeded attempts kept in the task row; results stored without their defaults',
    // No statement: what changes is what the rows hold. A succeeded attempt gets no attempt row
    // any more (TaskStore.completeAll); it is the task row's own, as the running attempt is. And
    // `tasks.result` leaves out the fields at their defaults (encodeResult in store.ts).
    // Why a version anyway: an older release would read such a database without complaint,
    // show succeeded tasks with no succeeded attempt, and results with fields missing. The
    // version makes it refuse (db.ts). Rows written before this version are read as before.
    sql: /* sql */ `
      SELECT 1;
    `,
  },
  {
    version: 7,
    name: 'job indexes that a task changing state does not move',
    // A job's tasks in order, and those in each state, as separate indexes keyed by
    // (job_id, id), instead of one index keyed by (job_id, state, id).
    // Why: an entry keyed by state moved at every transition, twice per task on the dispatch
    // path (queued -> running -> succeeded), each a delete and an insert in a large index; with
    // state out of the keys, a lease deletes one partial entry and inserts one, a success
    // deletes one and inserts one. Measured (bench/store-micro.ts, docs/benchmarks.md): the gain
    // comes from keys that do not change; a partial index with state in its key cost as much as
    // the old one, and one whose condition is an IN list (all terminal states) cost 10%.
    // Succeeded tasks, most of a job's, could be read by walking tasks_job, but a page of them
    // or of results near the end of a running job then read every queued task after it (~0.1 s
    // on the event loop for a job of 1M tasks), so they have their index too, and a page of
    // results (terminal tasks in order) merges three (TaskStore.resultsPage).
    // Queries must name the state as a literal for SQLite to use a partial index
    // (TaskStore's per-state statements; claim.test.ts checks the plans).
    sql: /* sql */ `
      DROP INDEX IF EXISTS tasks_job_state;
      CREATE INDEX IF NOT EXISTS tasks_job ON tasks (job_id, id);
      CREATE INDEX IF NOT EXISTS tasks_job_queued ON tasks (job_id, id) WHERE state = 'queued';
      CREATE INDEX IF NOT EXISTS tasks_job_running ON tasks (job_id, id) WHERE state = 'running';
      CREATE INDEX IF NOT EXISTS tasks_job_succeeded ON tasks (job_id, id) WHERE state = 'succeeded';
      CREATE INDEX IF NOT EXISTS tasks_job_failed ON tasks (job_id, id) WHERE state = 'failed';
      CREATE INDEX IF NOT EXISTS tasks_job_cancelled ON tasks (job_id, id) WHERE state = 'cancelled';
    `,
  },
];
