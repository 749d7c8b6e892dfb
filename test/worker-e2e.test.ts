/**
 * The worker daemon end to end: a real manager process, real worker processes, real children.
 */
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { readOutboxOf } from '@pullman/worker';
import { alive, finished, killAll, runWorkerToExit, startManager, startWorker, tempDir, until } from './harness.js';

afterEach(killAll);

describe('worker end to end', () => {
  it('runs a 500-task job over 2 workers with 2 slots each, with correct results', async () => {
    const m = await startManager();
    const w1 = startWorker(m, { name: 'w1', slots: 2 });
    const w2 = startWorker(m, { name: 'w2', slots: 2 });
    const tasks = Array.from({ length: 500 }, (_, i) => ({
      key: `n${i}`,
      shell: `echo "{\\"square\\": $(( ${i} * ${i} ))}" > "$PULLMAN_OUTPUT"`,
    }));
    const job = await m.api.createJob({ name: 'squares', tasks });
    const done = await finished(m.api, job.id);
    expect(done).toMatchObject({ state: 'succeeded', counts: { succeeded: 500, failed: 0, total: 500 } });
    const results = await m.api.results(job.id);
    expect(results).toHaveLength(500);
    for (const r of results) {
      const i = Number(r.key!.slice(1));
      expect(r).toMatchObject({ state: 'succeeded', exitCode: 0, attempts: 1, output: { square: i * i } });
    }
    const workers = await m.api.workers();
    expect(workers.map((w) => w.name).sort()).toEqual(['w1', 'w2']);
    expect(workers.reduce((n, w) => n + w.tasksSucceeded, 0)).toBe(500);
    for (const w of workers) expect(w.tasksSucceeded).toBeGreaterThan(0);
    // Every result was acked, so every outbox empties, although a result is sent while it is
    // still being written (an ack's removal waits for the write).
    await until('the outboxes emptied', async () => ((await Promise.all([w1, w2].map((w) => readOutboxOf(w.workDir).then((o) => o.pending)))).every((p) => p.length === 0) ? true : undefined), 10_000);
    // One line per task start and finish, and never a token, in any log.
    expect(w1.logs.filter((l) => l.msg === 'task finished').length + w2.logs.filter((l) => l.msg === 'task finished').length).toBe(500);
    for (const p of [m, w1, w2]) {
      const text = JSON.stringify(p.logs) + p.stderr();
      expect(text).not.toContain(m.workerToken);
      expect(text).not.toContain(m.adminToken);
    }
  });

  it('reports exit codes, signals, spawn failures, JSON output and the task environment', async () => {
    const m = await startManager();
    startWorker(m, { name: 'w1', slots: 4 });
    const job = await m.api.createJob({
      tasks: [
        { key: 'ok', command: ['true'] },
        { key: 'exit7', shell: 'echo failing >&2; exit 7' },
        { key: 'signal', shell: 'kill -KILL $$' },
        { key: 'missing', command: ['/no/such/program'] },
        {
          key: 'env',
          env: { CUSTOM: 'from spec' },
          shell: 'printf \'{"id":"%s","job":"%s","key":"%s","attempt":"%s","worker":"%s","custom":"%s"}\' "$PULLMAN_TASK_ID" "$PULLMAN_JOB_ID" "$PULLMAN_TASK_KEY" "$PULLMAN_ATTEMPT" "$PULLMAN_WORKER_ID" "$CUSTOM" > "$PULLMAN_OUTPUT"',
        },
        { key: 'argv', command: ['sh', '-c', 'test "$1" = "a b; c"', 'sh', 'a b; c'] },
      ],
    });
    await finished(m.api, job.id);
    const byKey = Object.fromEntries((await m.api.tasks(job.id)).map((t) => [t.key, t]));
    expect(byKey.ok).toMatchObject({ state: 'succeeded', result: { exitCode: 0 } });
    expect(byKey.exit7).toMatchObject({ state: 'failed', result: { exitCode: 7, stderrTail: 'failing\n', error: { code: 'NONZERO_EXIT' } } });
    expect(byKey.signal).toMatchObject({ state: 'failed', result: { exitCode: null, signal: 'SIGKILL' } });
    expect(byKey.missing).toMatchObject({ state: 'failed', result: { error: { code: 'SPAWN_FAILED' } } });
    expect(byKey.argv!.state).toBe('succeeded');
    const [worker] = await m.api.workers();
    expect(byKey.env!.result!.output).toEqual({ id: byKey.env!.id, job: job.id, key: 'env', attempt: '1', worker: worker!.id, custom: 'from spec' });
  });

  it('after an upgrade from a worker that kept a file per run, kills what such a file names and hands its lease back', async () => {
    const m = await startManager();
    const w = startWorker(m, { name: 'w1', slots: 1 });
    const marker = join(tempDir('upgrade'), 'first-run');
    const job = await m.api.createJob({ tasks: [{ shell: `if [ -e ${marker} ]; then echo again; else touch ${marker}; exec sleep 300; fi` }] });
    // Its run is in the journal (written after the start, in the background): then the crash.
    const run = await until('the run recorded', async () => (await readOutboxOf(w.workDir)).running[0], 30_000, 20);
    w.proc.kill('SIGKILL');
    await w.exited;
    // What an older release left at its crash: no journal, one file per run under running/.
    rmSync(join(w.workDir, 'outbox', 'journal'));
    mkdirSync(join(w.workDir, 'running'));
    writeFileSync(join(w.workDir, 'running', `${run.taskId}.${run.leaseId}.json`), JSON.stringify({ taskId: run.taskId, leaseId: run.leaseId, pid: run.pid }));
    // Not a record: released, it would be a protocol error that ends the session.
    writeFileSync(join(w.workDir, 'running', 'junk.json'), '{"pid":1}');
    startWorker(m, w.opts);
    expect(await finished(m.api, job.id)).toMatchObject({ state: 'succeeded' });
    const full = await m.api.task(run.taskId);
    expect(full.history!.map((h) => h.outcome)).toEqual(['released', 'succeeded']);
    expect(full.result).toMatchObject({ stdoutTail: 'again\n' });
    await until('the orphaned sleep to be gone', () => (alive(run.pid!) ? undefined : true), 10_000);
    expect(existsSync(join(w.workDir, 'running'))).toBe(false);
    // Moved into the journal, the run ended once the manager acked its release.
    await until('the run ended', async () => ((await readOutboxOf(w.workDir)).running.length === 0 ? true : undefined), 30_000, 20);
  });

  it('kills a timed-out task with its whole process group, leaving no orphan', async () => {
    const m = await startManager();
    const w = startWorker(m, { name: 'w1', slots: 1 });
    const pidFile = join(tempDir('pid'), 'grandchild.pid');
    const job = await m.api.createJob({ tasks: [{ shell: `sleep 300 & echo $! > ${pidFile}; wait`, timeout: '1s', retries: 1 }] });
    const done = await finished(m.api, job.id);
    expect(done.state).toBe('failed');
    const [task] = await m.api.tasks(job.id);
    expect(task!.attempts).toBe(2); // a timeout spends a retry
    expect(task!.result).toMatchObject({ error: { code: 'TIMED_OUT' }, signal: 'SIGTERM' });
    const full = await m.api.task(task!.id);
    expect(full.history!.map((h) => h.outcome)).toEqual(['timed-out', 'timed-out']);
    const grandchild = Number(readFileSync(pidFile, 'utf8'));
    await until('the grandchild to be gone', () => (alive(grandchild) ? undefined : true), 10_000);
    expect(w.proc.exitCode).toBeNull(); // the worker itself carries on
  });

  it('after a crash, sends a result left in its outbox instead of releasing that lease', async () => {
    const m = await startManager();
    const w = startWorker(m, { name: 'w1', slots: 1 });
    const job = await m.api.createJob({ tasks: [{ shell: 'exec sleep 300', key: 'slow' }] });
    const run = await until('the run recorded', async () => (await readOutboxOf(w.workDir)).running[0], 30_000, 20);
    // The worker dies after storing the result but before ending the run.
    w.proc.kill('SIGKILL');
    await w.exited;
    const { taskId, leaseId, pid } = run as { taskId: string; leaseId: string; pid: number };
    const report = { exitCode: 0, signal: null, timedOut: false, cancelled: false, durationMs: 5, stdoutTail: 'done\n', stderrTail: '', output: null, error: null };
    // The result's line, as the outbox appends it (docs/configuration.md, the work dir).
    appendFileSync(join(w.workDir, 'outbox', 'journal'), `P ${JSON.stringify({ taskId, leaseId, report })}\n`);

    startWorker(m, w.opts);
    // Released first, the task would be requeued and run again (another sleep 300).
    const done = await finished(m.api, job.id);
    expect(done.state).toBe('succeeded');
    const [task] = await m.api.tasks(job.id);
    expect(task).toMatchObject({ id: taskId, attempts: 1, result: { exitCode: 0, stdoutTail: 'done\n' } });
    // The orphaned process of the first incarnation was still killed, and its run ended once
    // the result was acked.
    await until('the orphaned task process to be gone', () => (alive(pid) ? undefined : true), 10_000);
    await until('the run ended', async () => ((await readOutboxOf(w.workDir)).running.length === 0 ? true : undefined), 30_000, 20);
  });

  it('sends its results without waiting for the outbox, and carries on when the outbox cannot be written', async () => {
    const m = await startManager();
    const w = startWorker(m, { name: 'w1', slots: 1 });
    const running = async () => (await readOutboxOf(w.workDir)).running;
    // A first task: the session is set up (its outbox re-sent, its credits granted), and the
    // task's own outbox write has ended (its run ends after it), before the outbox breaks.
    expect(await finished(m.api, (await m.api.createJob({ tasks: [{ command: ['true'] }] })).id)).toMatchObject({ state: 'succeeded' });
    await until('the first task done with', async () => ((await running()).length === 0 ? true : undefined), 30_000, 20);
    // The outbox is a file now: every result's write to it fails (ENOTDIR).
    rmSync(join(w.workDir, 'outbox'), { recursive: true });
    writeFileSync(join(w.workDir, 'outbox'), '');
    const job = await m.api.createJob({ tasks: [{ key: 'a', command: ['true'] }, { key: 'b', command: ['true'] }] });
    // Each result still reaches the manager (and is acked), one after the other on one slot.
    const done = await finished(m.api, job.id);
    expect(done).toMatchObject({ state: 'succeeded', counts: { succeeded: 2, total: 2 } });
    const notWritten = () => w.logs.filter((l) => l.msg === 'result not written to the outbox; sent all the same, but if no ack comes before a restart, the task runs again').length;
    await until('both failed writes logged', () => (notWritten() === 2 ? true : undefined), 30_000, 20);
    // Its running records cannot be written either (they live in the outbox's journal): the
    // worker carries on regardless, and runs the next task.
    expect(await finished(m.api, (await m.api.createJob({ tasks: [{ command: ['true'] }] })).id)).toMatchObject({ state: 'succeeded' });
    await until('the third failed write logged', () => (notWritten() === 3 ? true : undefined), 30_000, 20);
    expect(w.logs.some((l) => l.msg === 'running record not written yet; it is written with the next write that succeeds')).toBe(true);
    expect(w.proc.exitCode).toBeNull();
    expect(notWritten()).toBe(3);
  });

  it('gives back a task its work dir cannot hold, takes no work until the dir is fixed, then carries on', async () => {
    const m = await startManager();
    // Several slots: the task must not come back on the credits the manager still holds.
    const w = startWorker(m, { name: 'w1', slots: 4 });
    expect(await finished(m.api, (await m.api.createJob({ tasks: [{ command: ['true'] }] })).id)).toMatchObject({ state: 'succeeded' });
    // The scratch and running dirs are files now (a disk gone wrong): mkdir and the record fail.
    for (const dir of ['scratch', 'running']) {
      rmSync(join(w.workDir, dir), { recursive: true, force: true });
      writeFileSync(join(w.workDir, dir), '');
    }
    const job = await m.api.createJob({ tasks: [{ key: 'blocked', command: ['true'], retries: 0 }] });
    await w.waitForLog((l) => l.msg === 'the work dir cannot hold a task; giving tasks back and taking no work until it can', 'the pause', 60_000);
    // A probe (after 1 s) still fails. Had the worker granted its slot again, the task would have
    // come straight back and been given back again meanwhile: a second loss.
    await w.waitForLog((l) => l.msg === 'the work dir still cannot hold a task', 'a failed probe', 60_000);
    const queued = await until('the task back in the queue', async () => (await m.api.tasks(job.id)).find((t) => t.state === 'queued'), 30_000, 50);
    expect(queued).toMatchObject({ state: 'queued', attempts: 1 });
    const history = (await m.api.task(queued!.id)).history!;
    expect(history).toHaveLength(1);
    expect(history[0]).toMatchObject({ outcome: 'released', error: { message: 'released by worker (unhealthy)' } });
    // The manager shows why the worker takes no work.
    const paused = await until('the worker shown unhealthy', async () => (await m.api.workers()).find((x) => x.state === 'unhealthy'), 30_000, 50);
    expect(paused).toMatchObject({ name: 'w1', state: 'unhealthy', problem: expect.stringContaining(`cannot prepare the task's files under ${w.workDir}`) });

    for (const dir of ['scratch', 'running']) {
      rmSync(join(w.workDir, dir), { force: true });
      mkdirSync(join(w.workDir, dir), { recursive: true }); // a probe may have made it first
    }
    // Nothing was spent: a task with no retries left runs when the worker takes work again.
    expect(await finished(m.api, job.id)).toMatchObject({ state: 'succeeded' });
    expect(w.logs.some((l) => l.msg === 'the work dir can hold tasks again; taking work')).toBe(true);
    const [healthy] = await m.api.workers();
    expect(healthy).toMatchObject({ name: 'w1', problem: null });
    expect(['ready', 'busy']).toContain(healthy!.state);
    expect(w.proc.exitCode).toBeNull();
  });

  it('gives back a task whose spawn helper died under it, and runs it again forking tasks itself', async () => {
    const m = await startManager();
    const w = startWorker(m, { name: 'w1', slots: 1 });
    const marker = join(tempDir('helper'), 'first-parent');
    // The first run records its parent and sleeps; the second finds the record and says who its parent is.
    const job = await m.api.createJob({ tasks: [{ shell: `if [ -s ${marker} ]; then echo parent=$PPID; else echo $PPID > ${marker}.tmp; mv ${marker}.tmp ${marker}; exec sleep 300; fi` }] });
    await until('the first run', () => (existsSync(marker) ? true : undefined), 10_000);
    const helperPid = Number(readFileSync(marker, 'utf8'));
    expect(helperPid).not.toBe(w.proc.pid); // forked by the helper, not the worker
    process.kill(helperPid, 'SIGKILL');

    const done = await finished(m.api, job.id);
    expect(done.state).toBe('succeeded');
    const [task] = await m.api.tasks(job.id);
    expect(task!.result!.stdoutTail).toBe(`parent=${w.proc.pid}\n`);
    const full = await m.api.task(task!.id);
    // Released, not failed: the worker's fault spends no retry.
    expect(full.history!.map((h) => h.outcome)).toEqual(['released', 'succeeded']);
    await w.waitForLog((l) => l.msg === 'task stopped and released' && l.reason === 'lost', 'the lost task released');
    expect(w.proc.exitCode).toBeNull();
  });

  it('cancels a running task on its worker', async () => {
    const m = await startManager();
    const w = startWorker(m, { name: 'w1', slots: 1 });
    const pidFile = join(tempDir('pid'), 'task.pid');
    const job = await m.api.createJob({ tasks: [{ shell: `echo $$ > ${pidFile}; exec sleep 300` }, { command: ['true'], key: 'next' }] });
    const started = await w.waitForLog((l) => l.msg === 'task started', 'task start');
    await until('the pid file', () => (existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim() ? true : undefined), 10_000);
    const pid = Number(readFileSync(pidFile, 'utf8'));
    await m.api.call('POST', `/v1/tasks/${started.taskId as string}/cancel`);
    await until('the cancelled task to die', () => (alive(pid) ? undefined : true), 10_000);
    const done = await finished(m.api, job.id);
    // The freed slot runs the next task; the job counts the cancellation as not succeeded.
    expect(done).toMatchObject({ state: 'failed', counts: { cancelled: 1, succeeded: 1 } });
    await w.waitForLog((l) => l.msg === 'task finished' && l.taskId === started.taskId && l.cancelled === true, 'cancelled report');
  });

  it('keeps 64 KiB tails of huge output in the result and the full log on the worker disk', async () => {
    const m = await startManager();
    const w = startWorker(m, { name: 'w1', slots: 1 });
    const job = await m.api.createJob({ tasks: [{ shell: "head -c 3000000 /dev/zero | tr '\\0' x; echo; echo END-OF-STDOUT; head -c 200000 /dev/zero | tr '\\0' y >&2" }] });
    await finished(m.api, job.id);
    const [task] = await m.api.tasks(job.id);
    const { stdoutTail, stderrTail } = task!.result!;
    expect(Buffer.byteLength(stdoutTail)).toBeLessThanOrEqual(64 * 1024);
    expect(Buffer.byteLength(stdoutTail)).toBeGreaterThan(60 * 1024);
    expect(stdoutTail.endsWith('END-OF-STDOUT\n')).toBe(true);
    expect(stderrTail).toBe('y'.repeat(64 * 1024));
    const log = join(w.workDir, 'logs', `${task!.id}.1.stdout.log`);
    expect(statSync(log).size).toBe(3_000_000 + 1 + 'END-OF-STDOUT\n'.length);
  });

  it('matches labels and never overfills slots', async () => {
    const m = await startManager();
    startWorker(m, { name: 'cpu', slots: 2 });
    startWorker(m, { name: 'gpu', slots: 2, labels: ['gpu', 'cuda'] });
    // Each task records when it ran, so overlap per worker can be checked afterwards.
    const span = 'start=$(date +%s%N); sleep 0.2; printf \'{"start":%s,"end":%s}\' $start $(date +%s%N) > "$PULLMAN_OUTPUT"';
    const tasks = [
      ...Array.from({ length: 6 }, (_, i) => ({ key: `gpu${i}`, requires: ['gpu'], shell: span })),
      ...Array.from({ length: 4 }, (_, i) => ({ key: `wide${i}`, slots: 2, shell: span })),
      ...Array.from({ length: 8 }, (_, i) => ({ key: `one${i}`, shell: span })),
    ];
    const job = await m.api.createJob({ tasks });
    expect((await finished(m.api, job.id)).state).toBe('succeeded');
    const workers = Object.fromEntries((await m.api.workers()).map((w) => [w.id, w.name]));
    const all = await m.api.tasks(job.id);
    for (const t of all.filter((t) => t.key!.startsWith('gpu'))) expect(workers[t.workerId!]).toBe('gpu');
    for (const name of ['cpu', 'gpu']) {
      const mine = all.filter((t) => workers[t.workerId!] === name).map((t) => ({ slots: t.slots, ...(t.result!.output as { start: number; end: number }) }));
      for (const t of mine) {
        // Slots in use while this task started never exceed the worker's 2.
        const inUse = mine.filter((o) => o.start <= t.start && o.end > t.start).reduce((n, o) => n + o.slots, 0);
        expect(inUse).toBeLessThanOrEqual(2);
      }
    }
  });

  it('runs higher priority first, then in submission order', async () => {
    const m = await startManager();
    const tasks = [
      { key: 'low-1', priority: -1, command: ['true'] },
      { key: 'mid-1', command: ['true'] },
      { key: 'high-1', priority: 5, command: ['true'] },
      { key: 'mid-2', command: ['true'] },
      { key: 'high-2', priority: 5, command: ['true'] },
      { key: 'low-2', priority: -1, command: ['true'] },
    ];
    const job = await m.api.createJob({ tasks });
    // One slot, started after submission: the claim order is the run order.
    startWorker(m, { name: 'w1', slots: 1 });
    await finished(m.api, job.id);
    const order = (await m.api.tasks(job.id)).sort((a, b) => Date.parse(a.startedAt!) - Date.parse(b.startedAt!) || Number(a.id.slice(5)) - Number(b.id.slice(5))).map((t) => t.key);
    expect(order).toEqual(['high-1', 'high-2', 'mid-1', 'mid-2', 'low-1', 'low-2']);
  });

  it('exits 2 with one clear line on bad configuration', async () => {
    const base = { PULLMAN_READY: 'none', PULLMAN_WORKER_TOKEN: 'x'.repeat(20) };
    for (const [env, expected] of [
      [{ PULLMAN_READY: 'none' }, 'a worker token is required'],
      [{ ...base, PULLMAN_MANAGER_URL: 'not a url' }, 'PULLMAN_MANAGER_URL: "not a url" is not a URL'],
      [{ ...base, PULLMAN_SLOTS: '0' }, 'PULLMAN_SLOTS: "0" must be a whole number'],
      [{ ...base, PULLMAN_READY: 'sometimes' }, 'PULLMAN_READY: "sometimes" must be one of'],
    ] as const) {
      const r = await runWorkerToExit(['run'], { ...env });
      expect(r.code).toBe(2);
      const lines = r.stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/^pullman-worker: /);
      expect(lines[0]).toContain(expected);
    }
  });

  it('refuses a second worker on a work dir another one runs on, and runs once that one was killed -9', async () => {
    const m = await startManager();
    const first = startWorker(m, { name: 'first', slots: 1 });
    await first.waitForLog((l) => l.msg === 'registered with the manager', 'first registration');
    // A second daemon on the same dir (started by hand beside systemd's, say) would share the
    // worker id, the outbox and the running records.
    const second = startWorker(m, { name: 'second', slots: 1, workDir: first.workDir });
    expect((await second.exited).code).toBe(2);
    const lines = second.stderr().trim().split('\n');
    expect(lines).toEqual([`pullman-worker: another pullman-worker is running with the work dir ${first.workDir}; stop it first, or give this one a PULLMAN_WORK_DIR of its own`]);
    expect((await m.api.workers()).map((w) => w.name)).toEqual(['first']);
    // The kernel frees the lock however its holder dies, and a task process that outlives it
    // did not inherit it: the next worker on the dir starts.
    const long = await m.api.createJob({ tasks: [{ shell: 'exec sleep 120', key: 'long' }] });
    const record = await until('the run recorded', async () => (await readOutboxOf(first.workDir)).running[0], 30_000, 20);
    const pid = record.pid!;
    first.proc.kill('SIGKILL');
    await first.exited;
    expect(alive(pid)).toBe(true);
    const third = startWorker(m, { ...first.opts, name: 'third', slots: 2 });
    await third.waitForLog((l) => l.msg === 'registered with the manager', 'third registration');
    const job = await m.api.createJob({ tasks: [{ shell: 'true' }] });
    expect((await finished(m.api, job.id)).state).toBe('succeeded');
    // Tidy: the orphan was killed by the third worker at its start, and its rerun goes with the job.
    await until('the orphaned sleep to be gone', () => (alive(pid) ? undefined : true), 10_000);
    await m.api.call('POST', `/v1/jobs/${long.id}/cancel`);
  });

  it('exits 2 when the manager refuses the worker token', async () => {
    const m = await startManager();
    const w = startWorker(m, { name: 'w1', env: { PULLMAN_WORKER_TOKEN: 'wrong-token-wrong-token' } });
    const { code } = await w.exited;
    expect(code).toBe(2);
    expect(w.stderr()).toContain('refused the worker token');
    expect(w.stderr()).not.toContain('wrong-token-wrong-token');
  });
});
