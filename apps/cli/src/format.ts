/** Human output: borderless aligned tables (cli-table3) and key/value detail views. */
import Table from 'cli-table3';
import { formatDuration, type Job, type Task, type Worker } from '@pullman/protocol';

const PLAIN_CHARS = {
  top: '', 'top-mid': '', 'top-left': '', 'top-right': '',
  bottom: '', 'bottom-mid': '', 'bottom-left': '', 'bottom-right': '',
  left: '', 'left-mid': '', mid: '', 'mid-mid': '', right: '', 'right-mid': '', middle: '  ',
};

/** An aligned table without borders or colours, like `kubectl get`: easy to read and to grep. */
export function table(head: string[], rows: Array<Array<string | number>>): string {
  const t = new Table({ head, chars: PLAIN_CHARS, style: { head: [], border: [], 'padding-left': 0, 'padding-right': 0 } });
  for (const r of rows) t.push(r.map(String));
  return t.toString().split('\n').map((l) => l.trimEnd()).join('\n');
}

/** "12s ago", "3.5m ago"; "-" for never. */
export function ago(iso: string | null, now = Date.now()): string {
  if (!iso) return '-';
  return `${formatDuration(Math.max(0, now - Date.parse(iso)))} ago`;
}

const span = (from: string | null, to: string | null): string =>
  from && to ? formatDuration(Math.max(0, Date.parse(to) - Date.parse(from))) : '-';

export function jobsTable(jobs: Job[]): string {
  if (jobs.length === 0) return 'no jobs';
  return table(
    ['ID', 'NAME', 'STATE', 'TOTAL', 'DONE', 'FAILED', 'RUNNING', 'QUEUED', 'CREATED'],
    jobs.map((j) => [j.id, j.name ?? '-', j.sealed ? j.state : `${j.state} (open)`, j.counts.total, j.counts.succeeded, j.counts.failed, j.counts.running, j.counts.queued, ago(j.createdAt)]),
  );
}

function fields(pairs: Array<[string, string | number]>): string {
  const width = Math.max(...pairs.map(([k]) => k.length)) + 2;
  return pairs.map(([k, v]) => `${`${k}:`.padEnd(width)}${v}`).join('\n');
}

export function jobDetail(job: Job): string {
  const c = job.counts;
  return fields([
    ['id', job.id],
    ['name', job.name ?? '-'],
    ['state', job.state],
    ['sealed', job.sealed ? 'yes' : 'no (open for more tasks)'],
    ['tasks', `${c.total} total: ${c.succeeded} done, ${c.failed} failed, ${c.cancelled} cancelled, ${c.running} running, ${c.queued} queued`],
    ['created', `${job.createdAt} (${ago(job.createdAt)})`],
    ['finished', job.finishedAt ? `${job.finishedAt} (took ${span(job.createdAt, job.finishedAt)})` : '-'],
  ]);
}

const command = (t: Task): string => {
  const text = t.spec.shell ?? (t.spec.command ?? []).map((a) => (/^[\w./=:,+-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
};

export function tasksTable(tasks: Task[]): string {
  if (tasks.length === 0) return 'no tasks';
  return table(
    ['ID', 'KEY', 'STATE', 'ATTEMPTS', 'EXIT', 'TIME', 'WORKER', 'COMMAND'],
    tasks.map((t) => [
      t.id,
      t.key ?? '-',
      t.state,
      t.attempts,
      t.result ? (t.result.exitCode ?? t.result.signal ?? '-') : '-',
      t.result ? formatDuration(t.result.durationMs) : '-',
      t.workerId ?? '-',
      command(t),
    ]),
  );
}

export function taskDetail(task: Task): string {
  const r = task.result;
  const out = [
    fields([
      ['id', task.id],
      ['job', task.jobId],
      ['key', task.key ?? '-'],
      ['state', task.state],
      ['attempts', task.attempts],
      ['worker', task.workerId ?? '-'],
      ['spec', JSON.stringify(task.spec)],
      ['created', task.createdAt],
      ['started', task.startedAt ?? '-'],
      ['finished', task.finishedAt ?? '-'],
      ...(r
        ? ([
            ['exit code', r.exitCode ?? '-'],
            ['signal', r.signal ?? '-'],
            ['duration', formatDuration(r.durationMs)],
            ['error', r.error ? `${r.error.code}: ${r.error.message}` : '-'],
            ['output', r.output === null || r.output === undefined ? '-' : JSON.stringify(r.output)],
          ] as Array<[string, string | number]>)
        : []),
    ]),
  ];
  if (r?.stdoutTail) out.push(`--- stdout (tail) ---\n${r.stdoutTail.trimEnd()}`);
  if (r?.stderrTail) out.push(`--- stderr (tail) ---\n${r.stderrTail.trimEnd()}`);
  if (task.history?.length) {
    out.push(
      'history:\n' +
        table(
          ['ATTEMPT', 'WORKER', 'OUTCOME', 'EXIT', 'STARTED', 'TOOK', 'ERROR'],
          task.history.map((h) => [h.attempt, h.workerId ?? '-', h.outcome, h.exitCode ?? '-', h.startedAt, span(h.startedAt, h.endedAt), h.error ? h.error.code : '-']),
        ),
    );
  }
  return out.join('\n');
}

export function workersTable(workers: Worker[]): string {
  if (workers.length === 0) return 'no workers';
  return table(
    ['ID', 'NAME', 'STATE', 'SLOTS', 'USED', 'DONE', 'FAILED', 'LABELS', 'HEARTBEAT', 'VM'],
    workers.map((w) => [w.id, w.name, w.state, w.slots, w.usedSlots, w.tasksSucceeded, w.tasksFailed, w.labels.join(',') || '-', ago(w.lastHeartbeatAt), w.vm ? `${w.vm.name} (${w.vm.vmSize})` : '-']),
  ) + workers.filter((w) => w.problem).map((w) => `\n${w.id} takes no work: ${w.problem}`).join('');
}
