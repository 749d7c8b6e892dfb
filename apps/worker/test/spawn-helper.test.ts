/**
 * The spawn helper's own life: starting, being unavailable, dying under running tasks, closing.
 * What tasks see through it is the executor suite's, run once per way of forking.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { TaskAssignment, TaskSpec } from '@pullman/protocol';
import { startExecution } from '../src/executor.js';
import { SpawnHelper } from '../src/spawn-helper.js';
import { alive, expectGone, parentOf, procStat } from './procs.js';

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

function freshWorkDir(): string {
  const dir = realpathSync(mkdtempSync(join(tmpdir(), 'pullman-helper-')));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A logger whose lines are kept, parsed. */
function capturingLogger(): { log: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { log: pino({ level: 'debug' }, sink), lines };
}

async function startHelper(log: Logger = pino({ level: 'silent' })): Promise<SpawnHelper> {
  const helper = await SpawnHelper.start(log);
  expect(helper).not.toBeNull();
  cleanups.push(() => helper!.close());
  return helper!;
}

const task = (spec: TaskSpec, taskId = 'task-1'): TaskAssignment => ({ taskId, jobId: 'job-1', key: null, attempt: 1, leaseId: 'L', spec });

describe('SpawnHelper', () => {
  it('is null, with a warning saying why, when perl cannot run or exits at once', async () => {
    for (const [perl, why] of [['/nonexistent/perl', 'cannot run /nonexistent/perl: ENOENT'], ['false', 'false exited (1) before it was ready']] as const) {
      const { log, lines } = capturingLogger();
      expect(await SpawnHelper.start(log, perl)).toBeNull();
      expect(lines).toContainEqual(expect.objectContaining({ level: 40, reason: why, msg: 'spawn helper unavailable; tasks are forked by the worker itself' }));
    }
  });

  it('runs tasks as its own children, in process groups of their own', async () => {
    const helper = await startHelper();
    const exec = await startExecution(task({ command: ['sleep', '30'] }), { workDir: freshWorkDir(), workerId: 'w', killGraceMs: 500, keepFailedScratch: false, helper });
    const pid = exec.pid!;
    expect(parentOf(pid)).toBe(helper.pid);
    // The process group and the session are the task's own (setsid), as with Node's detached.
    const fields = procStat(pid);
    expect(Number(fields[2])).toBe(pid); // pgrp
    expect(Number(fields[3])).toBe(pid); // session
    exec.stop('cancel');
    expect(await exec.done).toMatchObject({ cancelled: true, signal: 'SIGTERM' });
  });

  it('dying under a running task: the task is killed and reported lost, and later tasks are forked by the worker', async () => {
    const { log, lines } = capturingLogger();
    const helper = await startHelper(log);
    expect(lines).toContainEqual(expect.objectContaining({ level: 30, pid: helper.pid, msg: 'spawn helper ready; tasks start through it' }));
    const workDir = freshWorkDir();
    const opts = { workDir, workerId: 'w', killGraceMs: 500, keepFailedScratch: false, helper };
    const exec = await startExecution(task({ shell: 'exec sleep 300' }), opts);
    const pid = exec.pid!;
    expect(alive(pid)).toBe(true);

    process.kill(helper.pid, 'SIGKILL');
    const report = await exec.done;
    expect(exec.stopReason).toBe('lost');
    expect(report.error).toMatchObject({ code: 'SPAWN_FAILED', message: 'the spawn helper died while the task ran; the task was stopped' });
    await expectGone(pid);
    expect(helper.lost).toMatch(/^helper exited \(SIGKILL\)$/);
    expect(lines).toContainEqual(expect.objectContaining({ level: 50, msg: expect.stringContaining('spawn helper lost'), running: 1 }));

    const next = await startExecution(task({ shell: 'echo $PPID' }, 'task-2'), opts);
    expect(await next.done).toMatchObject({ exitCode: 0, stdoutTail: `${process.pid}\n` });
  });

  it('gives tasks real pipes: a task may write to /dev/stdout and /dev/stderr by name', async () => {
    // Node's spawn gives socket pairs, which cannot be opened by name (ENXIO): the in-process
    // path fails this. A log file in their place would be truncated by the reopen.
    const helper = await startHelper();
    const exec = await startExecution(task({ shell: 'echo one; echo two > /dev/stderr; echo three >&2; echo four > /dev/stdout' }), { workDir: freshWorkDir(), workerId: 'w', killGraceMs: 500, keepFailedScratch: false, helper });
    expect(await exec.done).toMatchObject({ exitCode: 0, stdoutTail: 'one\nfour\n', stderrTail: 'two\nthree\n' });
  });

  it('does not let the worker\'s Perl settings reach the helper', async () => {
    // PERL_UNICODE=SD made the helper's reads character reads, and it died on its first request.
    process.env.PERL_UNICODE = 'SD';
    process.env.PERL5OPT = '-Mstrict=refs,bogus';
    try {
      const helper = await startHelper();
      const exec = await startExecution(task({ shell: 'echo $PPID' }), { workDir: freshWorkDir(), workerId: 'w', killGraceMs: 500, keepFailedScratch: false, helper });
      expect(await exec.done).toMatchObject({ exitCode: 0, stdoutTail: `${helper.pid}\n` });
    } finally {
      delete process.env.PERL_UNICODE;
      delete process.env.PERL5OPT;
    }
  });

  it('dying after a start request went out: the task is given back, never forked a second time', async () => {
    // A stand-in for perl that says ready, takes the first byte of a request and dies.
    const fake = join(freshWorkDir(), 'fake-perl');
    writeFileSync(fake, '#!/bin/sh\necho R\nhead -c 1 >/dev/null\nexit 1\n');
    chmodSync(fake, 0o755);
    const helper = (await SpawnHelper.start(pino({ level: 'silent' }), fake))!;
    expect(helper).not.toBeNull();
    const workDir = freshWorkDir();
    const marker = join(workDir, 'ran');
    const exec = await startExecution(task({ shell: `touch ${marker}` }), { workDir, workerId: 'w', killGraceMs: 500, keepFailedScratch: false, helper });
    const report = await exec.done;
    expect(exec.stopReason).toBe('lost'); // the daemon releases it
    expect(report.error).toMatchObject({ code: 'SPAWN_FAILED', message: 'the spawn helper died while starting the task' });
    expect(() => readFileSync(marker)).toThrow(/ENOENT/);
  });

  it('dying between starting a task and saying so: the task\'s process is found by its environment and killed', async () => {
    // A stand-in that starts a process the way the helper would (the task's environment, a
    // session of its own, none of the helper's descriptors) and dies before answering.
    const dir = freshWorkDir();
    const pidFile = join(dir, 'started.pid');
    const fake = join(dir, 'fake-perl');
    writeFileSync(fake, `#!/bin/sh\necho R\nhead -c 1 >/dev/null\nPULLMAN_TASK_ID=vanish-1 PULLMAN_ATTEMPT=1 PULLMAN_WORKER_ID=w-vanish setsid sleep 300 </dev/null >/dev/null 2>&1 &\necho $! > ${pidFile}\nsleep 0.3\nexit 1\n`);
    chmodSync(fake, 0o755);
    const helper = (await SpawnHelper.start(pino({ level: 'silent' }), fake))!;
    const exec = await startExecution(task({ command: ['sleep', '300'] }, 'vanish-1'), { workDir: freshWorkDir(), workerId: 'w-vanish', killGraceMs: 500, keepFailedScratch: false, helper });
    expect(exec.stopReason).toBe('lost');
    const stray = Number(readFileSync(pidFile, 'utf8'));
    await expectGone(stray);
  });

  it('reads every reply a helper sent before it died, even when a later request met a closed pipe', async () => {
    // A stand-in that starts request 1, reports it done, and exits: its replies wait in the pipe
    // while the worker is busy. A write after that fails (EPIPE), and used to drop them: the
    // finished task was taken for lost, killed and run again.
    const fake = join(freshWorkDir(), 'fake-perl');
    writeFileSync(fake, '#!/bin/sh\necho R\nhead -c 1 >/dev/null\necho "S 1 $$"\necho "X 1 0 0 6869 -"\nexit 0\n');
    chmodSync(fake, 0o755);
    const helper = (await SpawnHelper.start(pino({ level: 'silent' }), fake))!;
    const workDir = freshWorkDir();
    const request = (name: string) => ({ file: 'true', args: [], cwd: workDir, env: {}, scratch: join(workDir, name), output: join(workDir, `${name}.json`), stdoutLog: join(workDir, `${name}.out`), stderrLog: join(workDir, `${name}.err`) });
    const first = helper.launch(request('one'));
    const until = Date.now() + 800;
    while (Date.now() < until) {
      // The worker's event loop, busy: the helper answers and exits meanwhile.
    }
    const second = helper.launch(request('two'));
    const started = await first;
    expect(started.kind).toBe('started');
    expect(await (started as Extract<typeof started, { kind: 'started' }>).exit).toMatchObject({ kind: 'exited', code: 0, stdoutTail: Buffer.from('hi') });
    // Written to a helper that was gone: unknown, so given back by the executor.
    expect(await second).toEqual({ kind: 'vanished' });
    // And from then on, nothing is written to it: starts go the worker's own way.
    expect(await helper.launch(request('three'))).toEqual({ kind: 'lost' });
  });

  it('keeps the worker\'s process alive while it has tasks, and only then', () => {
    // A script with nothing else to wait for: an unref'd helper let it end before the task did.
    const dist = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist');
    const script = `
      import { pino } from 'pino';
      import { startExecution } from ${JSON.stringify(join(dist, 'executor.js'))};
      import { SpawnHelper } from ${JSON.stringify(join(dist, 'spawn-helper.js'))};
      const helper = await SpawnHelper.start(pino({ level: 'silent' }));
      const exec = await startExecution({ taskId: 't', jobId: 'j', key: null, attempt: 1, leaseId: 'L', spec: { shell: 'sleep 0.3; echo done' } }, { workDir: process.argv[1], workerId: 'w', killGraceMs: 500, keepFailedScratch: false, helper });
      console.log(JSON.stringify(await exec.done));
    `;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script, freshWorkDir()], { encoding: 'utf8', timeout: 30_000, cwd: join(dist, '..') });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ exitCode: 0, stdoutTail: 'done\n' });
  });

  it('exits when closed, leaving a running task to run', async () => {
    const helper = await startHelper();
    const exec = await startExecution(task({ command: ['sleep', '30'] }), { workDir: freshWorkDir(), workerId: 'w', killGraceMs: 500, keepFailedScratch: false, helper });
    const pid = exec.pid!;
    cleanups.push(() => {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        // gone already
      }
    });
    helper.close();
    await expectGone(helper.pid);
    // As after a crash of a worker that forked it: the next worker start reaps it (reapOrphans).
    expect(alive(pid)).toBe(true);
  });
});
