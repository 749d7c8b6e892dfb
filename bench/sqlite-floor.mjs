// The raw better-sqlite3 claim + complete floor: the manager's own schema and pragmas
// (openDatabase: WAL, synchronous=NORMAL, temp_store=MEMORY), no attempts rows, job counters or
// fencing by worker. Shared by the sqlite-floor variant (bench/variants.ts) and the wire + SQLite
// floor (bench/wire-floor.mjs), so both measure the same statements. Plain JavaScript because
// wire-floor.mjs runs under plain node, like the manager.
import { openDatabase } from '@pullman/store';

const SPEC = '{"command":["true"]}';

/** Opens `path`, queues `tasks` no-op tasks (1,000 per transaction) and prepares the two statements. */
export function openFloor(path, tasks, sync = 'normal') {
  const db = openDatabase({ path, sync });
  const now = Date.now();
  db.prepare(`INSERT INTO jobs (name, state, sealed, created_at) VALUES ('floor', 'active', 1, ?)`).run(now);
  const insert = db.prepare(`INSERT INTO tasks (job_id, key, state, priority, slots, spec, retries, created_at) VALUES (1, NULL, 'queued', 0, 1, ?, 0, ?)`);
  const fill = db.transaction((n) => {
    for (let i = 0; i < n; i++) insert.run(SPEC, now);
  });
  for (let i = 0; i < tasks; i += 1_000) fill(Math.min(1_000, tasks - i));
  const claim = db.prepare(`
    UPDATE tasks SET state = 'running', lease_id = ?, lease_expires_at = ?, worker_id = ?, session_id = ?, attempts = attempts + 1, started_at = ?
    WHERE id IN (SELECT id FROM tasks WHERE state = 'queued' AND requires IS NULL AND slots = 1 ORDER BY priority DESC, id LIMIT ?)
    RETURNING id, spec`);
  const complete = db.prepare(`
    UPDATE tasks SET state = 'succeeded', finished_at = ?, result = ?, lease_id = NULL, lease_expires_at = NULL, session_id = NULL
    WHERE id = ? AND lease_id = ? AND state = 'running'`);
  return {
    db,
    /**
     * Leases up to `limit` queued tasks, queue order, under one lease id: the walk of one class
     * (no labels, one slot) of tasks_queue_class, as the manager's claim makes it.
     */
    claim: (leaseId, workerId, now, limit) => claim.all(leaseId, now + 30_000, workerId, workerId, now, limit),
    /** Completes one leased task; returns whether the lease matched. */
    complete: (now, result, id, leaseId) => complete.run(now, result, id, leaseId).changes === 1,
  };
}
