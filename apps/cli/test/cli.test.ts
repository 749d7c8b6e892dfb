/**
 * The built `pullman` binary against a real manager and real worker processes.
 */
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Job, ResultLine, Task, Worker } from '@pullman/protocol';
import { envFor, freePort, killAll, pullman, startManager, startWorker, tempDir, until, type Manager } from './harness.js';

afterEach(killAll);

const json = <T>(text: string): T => JSON.parse(text) as T;

function write(name: string, text: string): string {
  const file = join(tempDir('input'), name);
  writeFileSync(file, text);
  return file;
}

async function jobOf(m: Manager, id: string): Promise<Job> {
  const r = await pullman(['--json', 'job', id], { env: envFor(m) });
  expect(r.code).toBe(0);
  return json<Job>(r.stdout);
}

async function tasksOf(m: Manager, id: string): Promise<Task[]> {
  const r = await pullman(['tasks', id, '--json'], { env: envFor(m) });
  expect(r.code).toBe(0);
  return json<{ tasks: Task[] }>(r.stdout).tasks;
}

describe('pullman submit', () => {
  it('submits NDJSON, waits with a progress line, exits 0, and writes the results file', async () => {
    const m = await startManager();
    startWorker(m, 'w1');
    const file = write(
      'squares.ndjson',
      Array.from({ length: 12 }, (_, i) => JSON.stringify({ key: `sq-${i}`, shell: `echo '{"square": ${i * i}}' > "$PULLMAN_OUTPUT"` })).join('\n') + '\n',
    );
    const r = await pullman(['submit', file, '--wait', '--name', 'squares'], { env: envFor(m) });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toBe('job-1: submitted 12 tasks');
    // Not a terminal: plain progress lines, the last one complete, then the outcome.
    expect(r.stdout).toMatch(/^job-1: 100% 12\/12 \| 12 done, 0 failed, 0 running, 0 queued \| .* tasks\/s \| ETA 0s$/m);
    expect(lines.at(-1)).toMatch(/^job-1 succeeded: 12 of 12 tasks succeeded, 0 failed/);

    const out = join(tempDir('out'), 'results.ndjson');
    const res = await pullman(['results', 'job-1', '-o', out], { env: envFor(m) });
    expect(res).toMatchObject({ code: 0, stdout: '', stderr: `wrote 12 results of job-1 to ${out}\n` });
    const text = readFileSync(out, 'utf8');
    expect(text.endsWith('\n')).toBe(true);
    const results = text.trimEnd().split('\n').map((l) => json<ResultLine>(l));
    expect(results).toHaveLength(12);
    for (const line of results) {
      const i = Number(line.key!.slice(3));
      expect(line).toEqual({ taskId: expect.stringMatching(/^task-\d+$/), key: `sq-${i}`, state: 'succeeded', exitCode: 0, output: { square: i * i }, durationMs: expect.any(Number), attempts: 1, error: null });
    }
    // Without -o the same NDJSON goes to stdout.
    const stdout = await pullman(['results', 'job-1'], { env: envFor(m) });
    expect(stdout.code).toBe(0);
    expect(stdout.stdout).toBe(text);
  });

  it('submits a JSON array (prints the job id), and `job --watch` exits 0 when it succeeds', async () => {
    const m = await startManager();
    const file = write('array.json', JSON.stringify([{ key: 'a', command: ['true'] }, { key: 'b', command: ['sh', '-c', 'exit 0'] }], null, 2));
    const r = await pullman(['submit', file], { env: envFor(m) });
    expect(r).toMatchObject({ code: 0, stdout: 'job-1\n', stderr: 'submitted 2 tasks to job-1\n' });
    const job = await jobOf(m, 'job-1');
    expect(job).toMatchObject({ name: 'array.json', sealed: true, state: 'active', counts: { total: 2, queued: 2 } });
    expect((await tasksOf(m, 'job-1')).map((t) => [t.key, t.spec.command])).toEqual([['a', ['true']], ['b', ['sh', '-c', 'exit 0']]]);

    startWorker(m, 'w1');
    const watched = await pullman(['job', 'job-1', '--watch'], { env: envFor(m) });
    expect(watched.code).toBe(0);
    expect(watched.stdout).toMatch(/job-1 succeeded: 2 of 2 tasks succeeded/);
  });

  it('submits --lines from stdin: one shell command per line, comments and blanks skipped, keys line-N', async () => {
    const m = await startManager();
    const input = '# a parameter sweep\necho alpha\n\n  echo beta  \n# done\necho gamma\n';
    const workDir = tempDir('sweep-cwd');
    const r = await pullman(['--json', 'submit', '-', '--lines', '--name', 'sweep', '--timeout', '30s', '--retries', '2', '--cwd', workDir], { env: envFor(m), input });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = json<{ job: Job; accepted: number; duplicates: number }>(r.stdout);
    expect(out).toMatchObject({ accepted: 3, duplicates: 0, job: { id: 'job-1', name: 'sweep', sealed: true } });
    const tasks = await tasksOf(m, 'job-1');
    expect(tasks.map((t) => [t.key, t.spec.shell, t.spec.timeout, t.spec.retries, t.spec.cwd])).toEqual([
      ['line-2', 'echo alpha', '30s', 2, workDir],
      ['line-4', 'echo beta', '30s', 2, workDir],
      ['line-6', 'echo gamma', '30s', 2, workDir],
    ]);

    // Line keys make adding the same file to an open job idempotent.
    const open = await pullman(['--json', 'submit', '-', '--lines', '--open'], { env: envFor(m), input });
    expect(json<{ job: Job }>(open.stdout).job).toMatchObject({ id: 'job-2', sealed: false });
    const again = await pullman(['--json', 'submit', '-', '--lines', '--job', 'job-2'], { env: envFor(m), input: input + 'echo delta\n' });
    expect(again.code).toBe(0);
    expect(json<{ job: Job; accepted: number; duplicates: number }>(again.stdout)).toMatchObject({ accepted: 1, duplicates: 3, job: { sealed: true, counts: { total: 4 } } });
  });

  it('--wait exits 1 when a task fails, and retry requeues it', async () => {
    const m = await startManager();
    startWorker(m, 'w1');
    const marker = join(tempDir('marker'), 'second-try');
    const file = write('flaky.ndjson', [
      JSON.stringify({ key: 'ok', command: ['true'] }),
      JSON.stringify({ key: 'flaky', shell: `test -f ${marker} || { touch ${marker}; echo first try fails >&2; exit 4; }` }),
    ].join('\n'));
    const r = await pullman(['submit', file, '--wait'], { env: envFor(m) });
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^job-1 failed: 1 of 2 tasks succeeded, 1 failed/m);

    const failed = (await tasksOf(m, 'job-1')).find((t) => t.key === 'flaky')!;
    const shown = await pullman(['task', failed.id], { env: envFor(m) });
    expect(shown.code).toBe(0);
    expect(shown.stdout).toMatch(/^state: +failed$/m);
    expect(shown.stdout).toMatch(/^error: +NONZERO_EXIT/m);
    expect(shown.stdout).toContain('first try fails');

    const retried = await pullman(['retry', 'job-1'], { env: envFor(m) });
    expect(retried).toMatchObject({ code: 0, stdout: 'job-1: requeued 1 failed task\n' });
    const watched = await pullman(['job', 'job-1', '--watch'], { env: envFor(m) });
    expect(watched.code).toBe(0);
    expect((await jobOf(m, 'job-1')).counts).toMatchObject({ succeeded: 2, failed: 0 });
  });

  it('rejects a bad input file with its line number before creating a job (exit 2)', async () => {
    const m = await startManager();
    const file = write('typo.ndjson', '{"command":["true"]}\n{"comand":["true"]}\n');
    const r = await pullman(['submit', file], { env: envFor(m) });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`pullman: ${file} line 2: unknown field "comand"\n`);
    const both = await pullman(['submit', write('both.json', '[{"command":["true"],"shell":"true"}]')], { env: envFor(m) });
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/^pullman: .*both\.json\[0\]: exactly one of "command" and "shell" is required \(got both\)\n$/);
    const jobs = await pullman(['--json', 'jobs'], { env: envFor(m) });
    expect(json<{ jobs: Job[] }>(jobs.stdout).jobs).toEqual([]);
  });
});

describe('pullman cancel, workers, drain', () => {
  it('cancels a task and a job, telling them apart by id', async () => {
    const m = await startManager();
    const file = write('sleepy.ndjson', [1, 2, 3].map((i) => JSON.stringify({ key: `s${i}`, command: ['sleep', '600'] })).join('\n'));
    expect((await pullman(['submit', file], { env: envFor(m) })).code).toBe(0);
    const [first] = await tasksOf(m, 'job-1');

    const task = await pullman(['cancel', first!.id], { env: envFor(m) });
    expect(task).toMatchObject({ code: 0, stdout: `${first!.id}: cancelled\n` });
    const job = await pullman(['cancel', 'job-1'], { env: envFor(m) });
    expect(job.code).toBe(0);
    expect(job.stdout).toBe('job-1: cancelled (0 done, 0 failed, 0 running, 0 queued, 3 cancelled)\n');
    expect((await jobOf(m, 'job-1')).state).toBe('cancelled');

    const neither = await pullman(['cancel', 'w-123'], { env: envFor(m) });
    expect(neither).toMatchObject({ code: 2, stderr: 'pullman: "w-123" is neither a job id (job-N) nor a task id (task-N)\n' });
    const unknown = await pullman(['cancel', 'job-99'], { env: envFor(m) });
    expect(unknown).toMatchObject({ code: 1, stderr: 'pullman: JOB_NOT_FOUND: job job-99 does not exist\n' });
  });

  it('kills a running task on its worker when its job is cancelled', async () => {
    const m = await startManager();
    startWorker(m, 'w1', 1);
    const file = write('long.ndjson', JSON.stringify({ key: 'long', command: ['sleep', '600'] }));
    expect((await pullman(['submit', file], { env: envFor(m) })).code).toBe(0);
    await until('the task to run', async () => ((await jobOf(m, 'job-1')).counts.running === 1 ? true : undefined));
    expect((await pullman(['cancel', 'job-1'], { env: envFor(m) })).code).toBe(0);
    const [t] = await tasksOf(m, 'job-1');
    expect(t!.state).toBe('cancelled');
  });

  it('lists workers as a table and as JSON, and drains one', async () => {
    const m = await startManager();
    const w1 = startWorker(m, 'cli-w1', 3);
    startWorker(m, 'cli-w2', 1);
    const workers = await until('two workers', async () => {
      const r = await pullman(['workers', '--json'], { env: envFor(m) });
      const list = json<{ workers: Worker[] }>(r.stdout).workers;
      return list.filter((w) => w.state === 'ready').length === 2 ? list : undefined;
    });
    const table = await pullman(['workers'], { env: envFor(m) });
    expect(table.code).toBe(0);
    const [head, ...rows] = table.stdout.trimEnd().split('\n');
    expect(head).toMatch(/^ID +NAME +STATE +SLOTS +USED +DONE +FAILED +LABELS +HEARTBEAT +VM$/);
    expect(rows.map((r) => r.split(/ +/).slice(1, 4)).sort()).toEqual([['cli-w1', 'ready', '3'], ['cli-w2', 'ready', '1']]);

    const target = workers.find((w) => w.name === 'cli-w1')!;
    const drained = await pullman(['drain', target.id], { env: envFor(m) });
    expect(drained.code).toBe(0);
    expect(drained.stdout).toMatch(new RegExp(`^${target.id} \\(cli-w1\\): (draining|gone)\\n$`));
    expect(await w1.exited).toBe(0); // a drained idle worker leaves cleanly
    const after = await until('the drained worker to be gone', async () => {
      const r = await pullman(['workers', '--json'], { env: envFor(m) });
      const w = json<{ workers: Worker[] }>(r.stdout).workers.find((x) => x.id === target.id);
      return w && (w.state === 'gone' || w.state === 'offline') ? w : undefined;
    });
    expect(after.name).toBe('cli-w1');

    const unknown = await pullman(['drain', 'w-nope'], { env: envFor(m) });
    expect(unknown).toMatchObject({ code: 1, stderr: 'pullman: WORKER_NOT_FOUND: worker w-nope does not exist\n' });
  });
});

describe('pullman errors and token lookup', () => {
  it('exits 2 with one line for usage errors', async () => {
    const m = await startManager();
    const cases: string[][] = [
      ['bogus'],
      ['submit'],
      ['jobs', '--nope'],
      ['tasks', 'job-1', '--state', 'sleeping'],
      ['job', 'task-1'],
      ['task', 'job-1'],
      ['submit', '/no/such/file.ndjson'],
      ['submit', '-', '--timeout', 'soon'],
      ['--url', 'not-a-url', 'jobs'],
    ];
    for (const args of cases) {
      const r = await pullman(args, { env: envFor(m) });
      expect({ args, code: r.code }).toEqual({ args, code: 2 });
      expect(r.stderr).toMatch(/^pullman: [^\n]+\n$/);
      expect(r.stdout).toBe('');
    }
    expect((await pullman(['--help'], { env: envFor(m) })).code).toBe(0);
  });

  it('exits 3 with one clear line when the manager is unreachable or the token is bad', async () => {
    const m = await startManager();
    const port = await freePort();
    const down = await pullman(['jobs'], { env: { PULLMAN_URL: `http://127.0.0.1:${port}`, PULLMAN_TOKEN: 'x' } });
    expect(down).toMatchObject({ code: 3, stdout: '', stderr: `pullman: cannot reach the manager at http://127.0.0.1:${port} (ECONNREFUSED)\n` });

    const bad = await pullman(['jobs'], { env: { PULLMAN_URL: m.url, PULLMAN_TOKEN: 'not-the-token' } });
    expect(bad.code).toBe(3);
    expect(bad.stderr).toMatch(/^pullman: the manager refused the token \(UNAUTHORIZED: invalid token\); pass --token[^\n]*\n$/);

    const role = await pullman(['--token', m.workerToken, 'workers'], { env: { PULLMAN_URL: m.url } });
    expect(role.code).toBe(3);
    expect(role.stderr).toMatch(/^pullman: the manager refused the token \(FORBIDDEN: [^\n]*\n$/);

    const none = await pullman(['jobs'], { env: { PULLMAN_URL: m.url } });
    expect(none.code).toBe(3);
    expect(none.stderr).toMatch(/^pullman: no admin token: pass --token, or set PULLMAN_TOKEN or PULLMAN_TOKEN_FILE[^\n]*\n$/);
  });

  it('finds the token in --token, PULLMAN_TOKEN, PULLMAN_TOKEN_FILE, then ./.pullman/admin.token', async () => {
    const m = await startManager();
    const tokenFile = join(m.dataDir, 'admin.token');
    const ok = async (args: string[], env: Record<string, string>, cwd?: string) => {
      const r = await pullman(['--json', ...args, 'jobs'], { env: { PULLMAN_URL: m.url, ...env }, cwd });
      return r.code;
    };
    expect(await ok(['--token', m.adminToken], {})).toBe(0);
    expect(await ok(['--token', m.adminToken], { PULLMAN_TOKEN: 'wrong' })).toBe(0); // the flag wins
    expect(await ok([], { PULLMAN_TOKEN: m.adminToken, PULLMAN_TOKEN_FILE: '/no/such/file' })).toBe(0); // env beats file
    expect(await ok([], { PULLMAN_TOKEN_FILE: tokenFile })).toBe(0);
    const cwd = tempDir('cwd-token');
    mkdirSync(join(cwd, '.pullman'));
    copyFileSync(tokenFile, join(cwd, '.pullman', 'admin.token'));
    expect(await ok([], {}, cwd)).toBe(0);
    const missing = await pullman(['jobs'], { env: { PULLMAN_URL: m.url, PULLMAN_TOKEN_FILE: '/no/such/token' } });
    expect(missing).toMatchObject({ code: 3, stderr: 'pullman: PULLMAN_TOKEN_FILE: /no/such/token cannot be read (ENOENT)\n' });
  });

  it('shows jobs and a job as human tables', async () => {
    const m = await startManager();
    expect((await pullman(['jobs'], { env: envFor(m) })).stdout).toBe('no jobs\n');
    await pullman(['submit', write('one.ndjson', '{"command":["true"]}\n'), '--name', 'first'], { env: envFor(m) });
    const jobs = await pullman(['jobs'], { env: envFor(m) });
    const [head, row] = jobs.stdout.trimEnd().split('\n');
    expect(head).toMatch(/^ID +NAME +STATE +TOTAL +DONE +FAILED +RUNNING +QUEUED +CREATED$/);
    expect(row).toMatch(/^job-1 +first +active +1 +0 +0 +0 +1 +\S+ ago$/);
    const job = await pullman(['job', 'job-1'], { env: envFor(m) });
    expect(job.stdout).toMatch(/^tasks: +1 total: 0 done, 0 failed, 0 cancelled, 0 running, 1 queued$/m);
  });
});
