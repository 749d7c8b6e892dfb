/**
 * The invariant checker every chaos test ends with. It reads the manager's SQLite file
 * read-only (a second connection; the manager may still be running) and checks what Pullman
 * promises: at-least-once execution, exactly-once recording.
 *
 *  1. every submitted task is terminal (unless `allTerminal: false`), and none went missing;
 *  2. each succeeded task has exactly one `succeeded` attempt, its last, and a result;
 *  3. attempts, failures and losses add up and stay within their bounds;
 *  4. no task is `running` without a live lease once the TTL has passed, and no other task
 *     holds a lease at all;
 *  5. job counters equal a count of the task table, and job state follows from them;
 *  6. `PRAGMA integrity_check` says ok.
 *
 * Tasks built with `probeShell` also append one line per execution to a log, and write their
 * attempt number as output: that proves each recorded result came from the attempt recorded as
 * the successful one, and counts re-executions (the price of at-least-once).
 */
import Database from 'better-sqlite3';
import { existsSync, readFileSync } from 'node:fs';
import { parseJobId } from '@pullman/protocol';

/** Infrastructure losses a task may suffer before it fails with WORKER_LOST (store MAX_LOSSES). */
const MAX_LOSSES = 10;

export interface InvariantOptions {
  /** Jobs to check (all jobs when omitted). */
  jobIds?: string[];
  /** Tasks expected per job, by job id: catches tasks lost at submission. */
  expectedTasks?: Record<string, number>;
  /** Every task must be terminal (default true). */
  allTerminal?: boolean;
  /** The manager's lease TTL; a running task's lease may not be older than this plus `slackMs`. */
  leaseTtlMs: number;
  /** Reaper tick and scheduling slack on a loaded machine (default 5 s). */
  slackMs?: number;
  /** The execution log written by probeShell tasks, if any. */
  execLog?: string;
}

export interface InvariantStats {
  tasks: number;
  succeeded: number;
  failed: number;
  cancelled: number;
  /** Attempts started (claims). */
  attempts: number;
  /** Attempts that ended lost or released (infrastructure). */
  losses: number;
  /** Tasks executed more than once according to the execution log. */
  reExecuted: number;
  /** Executions in the execution log. */
  executions: number;
}

export interface InvariantReport {
  violations: string[];
  stats: InvariantStats;
}

interface TaskRow {
  id: number;
  job_id: number;
  key: string | null;
  state: string;
  retries: number;
  attempts: number;
  failures: number;
  losses: number;
  lease_id: string | null;
  lease_expires_at: number | null;
  session_id: string | null;
  result: string | null;
}

interface AttemptRow {
  task_id: number;
  attempt: number;
  outcome: string;
}

const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);

/** A task command that records each execution and reports its attempt as output. */
export function probeShell(execLog: string, work = 'true'): string {
  return `${work}; echo "$PULLMAN_TASK_ID $PULLMAN_ATTEMPT" >> '${execLog}'; echo "{\\"attempt\\":$PULLMAN_ATTEMPT}" > "$PULLMAN_OUTPUT"`;
}

export function checkInvariants(dbPath: string, o: InvariantOptions): InvariantReport {
  const v: string[] = [];
  const add = (msg: string) => {
    if (v.length < 50) v.push(msg);
  };
  const db = new Database(dbPath, { readonly: true, fileMustExist: true });
  try {
    const integrity = db.pragma('integrity_check', { simple: true });
    if (integrity !== 'ok') add(`integrity_check: ${String(integrity)}`);

    const jobSeqs = o.jobIds
      ? o.jobIds.map((id) => parseJobId(id) ?? -1)
      : (db.prepare('SELECT id FROM jobs ORDER BY id').all() as Array<{ id: number }>).map((r) => r.id);
    const now = Date.now();
    const slack = o.slackMs ?? 5_000;
    const stats: InvariantStats = { tasks: 0, succeeded: 0, failed: 0, cancelled: 0, attempts: 0, losses: 0, reExecuted: 0, executions: 0 };

    const executions = new Map<string, number[]>();
    if (o.execLog && existsSync(o.execLog)) {
      for (const line of readFileSync(o.execLog, 'utf8').split('\n')) {
        const [taskId, attempt] = line.trim().split(' ');
        if (!taskId || !attempt) continue;
        executions.set(taskId, [...(executions.get(taskId) ?? []), Number(attempt)]);
        stats.executions++;
      }
    }

    const taskStmt = db.prepare('SELECT id, job_id, key, state, retries, attempts, failures, losses, lease_id, lease_expires_at, session_id, result FROM tasks WHERE job_id = ? ORDER BY id');
    const attemptsStmt = db.prepare('SELECT task_id, attempt, outcome FROM attempts WHERE task_id IN (SELECT id FROM tasks WHERE job_id = ?) ORDER BY task_id, attempt');
    for (const jobSeq of jobSeqs) {
      const job = db.prepare('SELECT * FROM jobs WHERE id = ?').get(jobSeq) as Record<string, number | string | null> | undefined;
      if (!job) {
        add(`job ${jobSeq}: missing`);
        continue;
      }
      const tasks = taskStmt.all(jobSeq) as TaskRow[];
      const jobId = `job-${jobSeq}`;
      const expected = o.expectedTasks?.[Object.keys(o.expectedTasks).find((k) => parseJobId(k) === jobSeq) ?? ''];
      if (expected !== undefined && tasks.length !== expected) add(`${jobId}: ${tasks.length} tasks stored, ${expected} submitted`);

      const byTask = new Map<number, AttemptRow[]>();
      for (const a of attemptsStmt.all(jobSeq) as AttemptRow[]) byTask.set(a.task_id, [...(byTask.get(a.task_id) ?? []), a]);

      const counts: Record<string, number> = { queued: 0, running: 0, succeeded: 0, failed: 0, cancelled: 0 };
      for (const t of tasks) {
        const id = `task-${t.id}`;
        counts[t.state] = (counts[t.state] ?? 0) + 1;
        stats.tasks++;
        stats.attempts += t.attempts;
        if (t.state === 'succeeded') stats.succeeded++;
        if (t.state === 'failed') stats.failed++;
        if (t.state === 'cancelled') stats.cancelled++;
        if (o.allTerminal !== false && !TERMINAL.has(t.state)) add(`${id}: ${t.state}, not terminal`);

        const rows = byTask.get(t.id) ?? [];
        // Attempt rows are written when attempts end; the attempt a task is running, or the one
        // that succeeded, is the task row's own and has none (TaskStore.getTask adds it).
        const own = t.state === 'running' || t.state === 'succeeded';
        if (rows.length !== t.attempts - (own ? 1 : 0)) add(`${id}: attempts column ${t.attempts} (${t.state}), ${rows.length} attempt rows`);
        rows.forEach((a, i) => {
          if (a.attempt !== i + 1) add(`${id}: attempt rows not numbered 1..n (${rows.map((x) => x.attempt).join(',')})`);
        });
        const attempts = t.state === 'succeeded' ? [...rows, { task_id: t.id, attempt: t.attempts, outcome: 'succeeded' }] : rows;
        const outcomes = attempts.map((a) => a.outcome);
        const nSucceeded = outcomes.filter((x) => x === 'succeeded').length;
        const nFailed = outcomes.filter((x) => x === 'failed' || x === 'timed-out').length;
        const nLost = outcomes.filter((x) => x === 'lost' || x === 'released').length;
        const nRunning = outcomes.filter((x) => x === 'running').length;
        stats.losses += nLost;
        if (t.state === 'succeeded') {
          if (nSucceeded !== 1) add(`${id}: succeeded with ${nSucceeded} succeeded attempts (${outcomes.join(',')})`);
          if (outcomes.at(-1) !== 'succeeded') add(`${id}: succeeded but its last attempt is ${outcomes.at(-1)}`);
          if (t.result === null) add(`${id}: succeeded without a result`);
        } else if (nSucceeded !== 0) {
          add(`${id}: ${t.state} with a succeeded attempt`);
        }
        if (nRunning !== 0) add(`${id}: ${t.state} with an attempt row still 'running' (${outcomes.join(',')})`);
        if (nFailed !== t.failures) add(`${id}: failures column ${t.failures}, ${nFailed} failed attempts`);
        if (nLost !== t.losses) add(`${id}: losses column ${t.losses}, ${nLost} lost attempts`);
        if (t.failures > t.retries + 1) add(`${id}: ${t.failures} failures with retries=${t.retries}`);
        if (t.losses > MAX_LOSSES + 1) add(`${id}: ${t.losses} losses, over the cap`);
        if (t.state === 'queued' && (t.failures > t.retries || t.losses > MAX_LOSSES)) add(`${id}: queued past its retry or loss budget`);

        if (t.state === 'running') {
          if (t.lease_id === null || t.lease_expires_at === null) add(`${id}: running without a lease`);
          else if (t.lease_expires_at < now - slack) add(`${id}: running on a lease that expired ${now - t.lease_expires_at}ms ago`);
        } else if (t.lease_id !== null || t.lease_expires_at !== null || t.session_id !== null) {
          add(`${id}: ${t.state} but still holds a lease`);
        }

        const execs = executions.get(id);
        if (execs) {
          if (execs.length > 1) stats.reExecuted++;
          if (new Set(execs).size !== execs.length) add(`${id}: attempt numbers executed twice (${execs.join(',')})`);
        }
        if (o.execLog && t.state === 'succeeded') {
          const output = (JSON.parse(t.result ?? 'null') as { output?: { attempt?: number } } | null)?.output;
          const won = attempts.find((a) => a.outcome === 'succeeded')?.attempt;
          if (!execs?.length) add(`${id}: succeeded but never executed`);
          if (output?.attempt !== won) add(`${id}: recorded output of attempt ${output?.attempt}, but attempt ${won} is the one recorded as succeeded`);
        }
      }

      for (const s of ['queued', 'running', 'succeeded', 'failed', 'cancelled']) {
        if (job[`n_${s}`] !== counts[s]) add(`${jobId}: counter n_${s}=${job[`n_${s}`]}, the task table has ${counts[s]}`);
      }
      const allTerminal = counts.queued === 0 && counts.running === 0;
      if (job.sealed === 1 && allTerminal && job.state === 'active') add(`${jobId}: sealed and all tasks terminal, but still active`);
      if (job.state === 'succeeded' && (counts.failed! > 0 || counts.cancelled! > 0 || !allTerminal)) add(`${jobId}: succeeded with failed, cancelled or unfinished tasks`);
      if (job.state === 'failed' && counts.failed! + counts.cancelled! === 0) add(`${jobId}: failed with no failed task`);
    }
    return { violations: v, stats };
  } finally {
    db.close();
  }
}
