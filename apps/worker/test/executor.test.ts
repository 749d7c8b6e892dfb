import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { MAX_JSON_DEPTH, type TaskAssignment, type TaskSpec } from '@pullman/protocol';
import { attemptPaths, probeWorkDir, startExecution, type ExecutorOptions } from '../src/executor.js';
import { SpawnHelper } from '../src/spawn-helper.js';
import { alive, expectGone } from './procs.js';

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), 'fixtures');
const fixture = (name: string): string => join(FIXTURES, name);
const node = process.execPath;

const workDirs: string[] = [];
afterEach(() => {
  for (const dir of workDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A fresh work dir per test; realpath so it compares equal to a child's process.cwd(). */
function freshWorkDir(name: string): string {
  const dir = realpathSync(mkdtempSync(join(tmpdir(), `pullman-exec-${name}-`)));
  workDirs.push(dir);
  return dir;
}

function task(spec: TaskSpec, over: Partial<TaskAssignment> = {}): TaskAssignment {
  return { taskId: 'task-1', jobId: 'job-1', key: 'k', attempt: 1, leaseId: 'L', spec, ...over };
}

/** The helper of the suite running now, or null for the in-process one (see the end of the file). */
let helper: SpawnHelper | null = null;

function options(workDir: string, over: Partial<ExecutorOptions> = {}): ExecutorOptions {
  return { workDir, workerId: 'w-test', killGraceMs: 500, keepFailedScratch: true, helper, ...over };
}

async function run(name: string, spec: TaskSpec, over: Partial<ExecutorOptions> = {}) {
  const workDir = freshWorkDir(name);
  const t = task(spec);
  const exec = await startExecution(t, options(workDir, over));
  const report = await exec.done;
  return { workDir, task: t, exec, report, paths: attemptPaths(workDir, t) };
}

const readPid = (file: string): number => {
  const pid = Number(readFileSync(file, 'utf8').trim());
  expect(Number.isInteger(pid) && pid > 0).toBe(true);
  return pid;
};

/**
 * Every behaviour holds both ways a task can be forked: by the worker itself (Node's spawn) and
 * through the spawn helper (spawn-helper.ts), which runs the tasks as its own children.
 */
describe.each(['in-process', 'spawn helper'] as const)('forked %s', (mode) => {
  beforeAll(async () => {
    helper = mode === 'spawn helper' ? await SpawnHelper.start(pino({ level: 'silent' })) : null;
    if (mode === 'spawn helper') expect(helper).not.toBeNull();
  });
  afterAll(() => helper?.close());

  it('forks the task from the helper when there is one, else from the worker', async () => {
    const { report } = await run('parent', { shell: 'echo $PPID' });
    expect(report.exitCode).toBe(0);
    expect(Number(report.stdoutTail.trim())).toBe(helper ? helper.pid : process.pid);
  });

  describe('startExecution: exit status', () => {
    it('reports exit 0 as success with the tails', async () => {
      const { report } = await run('exit0', { command: ['/bin/sh', fixture('exit-code.sh'), '0'] });
      expect(report.exitCode).toBe(0);
      expect(report.signal).toBeNull();
      expect(report.timedOut).toBe(false);
      expect(report.cancelled).toBe(false);
      expect(report.error).toBeNull();
      expect(report.output).toBeNull();
      expect(report.stdoutTail).toBe('to stdout\n');
      expect(report.stderrTail).toBe('to stderr\n');
      expect(report.durationMs).toBeGreaterThanOrEqual(0);
    });

    it('reports a non-zero exit code', async () => {
      const { report } = await run('exit7', { command: ['/bin/sh', fixture('exit-code.sh'), '7'] });
      expect(report.exitCode).toBe(7);
      expect(report.signal).toBeNull();
      expect(report.timedOut).toBe(false);
      expect(report.cancelled).toBe(false);
      expect(report.error).toBeNull();
    });

    it('reports death by a signal as exitCode null and the signal name', async () => {
      const { report } = await run('killself', { command: ['/bin/sh', fixture('kill-self.sh')] });
      expect(report.exitCode).toBeNull();
      expect(report.signal).toBe('SIGKILL');
      expect(report.timedOut).toBe(false);
      expect(report.cancelled).toBe(false);
    });

    it('names a signal with two names as Node does (SIGABRT, not SIGIOT; SIGIO, not SIGPOLL)', async () => {
      for (const [n, name] of [[6, 'SIGABRT'], [29, 'SIGIO']] as const) {
        const { report } = await run(`signal-${n}`, { shell: `kill -${n} $$` });
        expect(report).toMatchObject({ exitCode: null, signal: name });
      }
    });
  });

  describe('startExecution: argv and shell', () => {
    it('passes argv arguments literally, spaces and shell characters included', async () => {
      const args = ['two words', '$HOME', 'a|b', '*', "it's"];
      const { report } = await run('argv', { command: [node, fixture('print-args.mjs'), ...args] });
      expect(report.exitCode).toBe(0);
      expect(JSON.parse(report.stdoutTail)).toEqual(args);
    });

    it('does not interpret shell syntax in argv mode', async () => {
      const { report } = await run('argv-pipe', { command: ['echo', 'hello', '|', 'tr', 'a-z', 'A-Z'] });
      expect(report.exitCode).toBe(0);
      expect(report.stdoutTail).toBe('hello | tr a-z A-Z\n');
    });

    it('runs `shell` with /bin/sh -c, so pipes and redirections work', async () => {
      const { report } = await run('shell-pipe', { shell: 'echo hello | tr a-z A-Z; echo oops >&2; exit 3' });
      expect(report.exitCode).toBe(3);
      expect(report.stdoutTail).toBe('HELLO\n');
      expect(report.stderrTail).toBe('oops\n');
    });
  });

  describe('startExecution: timeout and stopping', () => {
    it('kills a task that outlives its timeout and reports timedOut', async () => {
      const { report, exec } = await run('timeout', { shell: 'sleep 30', timeout: '300ms' });
      expect(report.timedOut).toBe(true);
      expect(report.cancelled).toBe(false);
      expect(report.exitCode).toBeNull();
      expect(report.signal).not.toBeNull();
      expect(report.error).toBeNull();
      expect(exec.stopReason).toBe('timeout');
    });

    it('leaves no orphan: a timed-out task takes its background grandchild with it', async () => {
      const workDir = freshWorkDir('orphan');
      const pidFile = join(workDir, 'grandchild.pid');
      const exec = await startExecution(task({ command: ['/bin/sh', fixture('grandchild.sh'), pidFile], timeout: '2s' }), options(workDir));
      const report = await exec.done;
      expect(report.timedOut).toBe(true);
      expect(report.exitCode).toBeNull();
      await expectGone(readPid(pidFile));
    });

    it('kills the background processes of a task that exits 0', async () => {
      const workDir = freshWorkDir('bg-exit');
      const pidFile = join(workDir, 'background.pid');
      const exec = await startExecution(task({ command: ['/bin/sh', fixture('background-exit.sh'), pidFile] }), options(workDir));
      const report = await exec.done;
      expect(report.exitCode).toBe(0);
      expect(report.signal).toBeNull();
      expect(report.error).toBeNull();
      await expectGone(readPid(pidFile));
    });

    it('SIGKILLs a task that ignores SIGTERM after the grace period', async () => {
      const workDir = freshWorkDir('ignore-term');
      const marker = join(workDir, 'trap-installed');
      const exec = await startExecution(task({ command: ['/bin/sh', fixture('ignore-term.sh'), marker] }), options(workDir, { killGraceMs: 300 }));
      await vi.waitFor(() => expect(existsSync(marker)).toBe(true), { timeout: 10_000, interval: 20 });
      exec.stop('cancel');
      const report = await exec.done;
      expect(report.exitCode).toBeNull();
      expect(report.signal).toBe('SIGKILL');
      expect(report.cancelled).toBe(true);
    });

    it('stop("cancel") reports cancelled, not timedOut', async () => {
      const workDir = freshWorkDir('cancel');
      const exec = await startExecution(task({ command: ['sleep', '30'] }), options(workDir));
      expect(exec.pid).toBeTypeOf('number');
      exec.stop('cancel');
      exec.stop('timeout'); // idempotent: the first reason sticks
      expect(exec.stopReason).toBe('cancel');
      const report = await exec.done;
      expect(report.cancelled).toBe(true);
      expect(report.timedOut).toBe(false);
      expect(report.exitCode).toBeNull();
      expect(report.signal).toBe('SIGTERM');
    });

    it('stop() after the task finished changes nothing', async () => {
      const workDir = freshWorkDir('stop-late');
      const exec = await startExecution(task({ command: ['/bin/sh', fixture('exit-code.sh'), '0'] }), options(workDir));
      const report = await exec.done;
      exec.stop('cancel');
      expect(exec.stopReason).toBeNull();
      expect(report.cancelled).toBe(false);
      expect(report.exitCode).toBe(0);
    });
  });

  describe('startExecution: environment', () => {
    it('sets the PULLMAN_* variables and merges spec.env over the base env', async () => {
      const workDir = freshWorkDir('env');
      const t = task({ command: [node, fixture('print-env.mjs')], env: { OVERRIDDEN: 'from-spec', SPEC_ONLY: 'spec' } }, { taskId: 'task-env', jobId: 'job-env', key: 'seed-17', attempt: 3 });
      const exec = await startExecution(t, options(workDir, { baseEnv: { BASE_ONLY: 'base', OVERRIDDEN: 'from-base' } }));
      const report = await exec.done;
      expect(report.exitCode).toBe(0);
      const { env } = JSON.parse(report.stdoutTail) as { env: Record<string, string> };
      expect(env).toMatchObject({
        PULLMAN_TASK_ID: 'task-env',
        PULLMAN_JOB_ID: 'job-env',
        PULLMAN_TASK_KEY: 'seed-17',
        PULLMAN_ATTEMPT: '3',
        PULLMAN_WORKER_ID: 'w-test',
        PULLMAN_OUTPUT: attemptPaths(workDir, t).output,
        BASE_ONLY: 'base',
        SPEC_ONLY: 'spec',
        OVERRIDDEN: 'from-spec',
      });
      // The base env replaces the worker's own environment rather than adding to it.
      expect(env.PATH).toBeUndefined();
      expect(env.HOME).toBeUndefined();
    });

    it('gives an empty PULLMAN_TASK_KEY to a task without a key', async () => {
      const workDir = freshWorkDir('env-nokey');
      const exec = await startExecution(task({ command: [node, fixture('print-env.mjs')] }, { key: null }), options(workDir));
      const report = await exec.done;
      const { env } = JSON.parse(report.stdoutTail) as { env: Record<string, string> };
      expect(env.PULLMAN_TASK_KEY).toBe('');
    });
  });

  describe('startExecution: $PULLMAN_OUTPUT', () => {
    it('turns the JSON written to $PULLMAN_OUTPUT into report.output', async () => {
      const { report, paths } = await run('output-json', { command: [node, fixture('write-output.mjs'), 'json'] });
      expect(report.exitCode).toBe(0);
      expect(report.error).toBeNull();
      expect(report.output).toEqual({ answer: 42, items: ['a', 'b'], nested: { ok: true } });
      expect(existsSync(paths.output)).toBe(false); // it travels in the report from here on
    });

    it('gives output null and no error when nothing is written', async () => {
      const { report } = await run('output-none', { command: [node, fixture('write-output.mjs'), 'none'] });
      expect(report.exitCode).toBe(0);
      expect(report.output).toBeNull();
      expect(report.error).toBeNull();
    });

    it('fails an exit-0 task whose output is not JSON with OUTPUT_INVALID', async () => {
      const { report } = await run('output-invalid', { command: [node, fixture('write-output.mjs'), 'invalid'] });
      expect(report.exitCode).toBe(0);
      expect(report.output).toBeNull();
      expect(report.error?.code).toBe('OUTPUT_INVALID');
    });

    it('fails an exit-0 task whose output nests deeper than MAX_JSON_DEPTH with OUTPUT_INVALID, and keeps one at the limit', async () => {
      // 100,000 levels parse, but could never be serialised again for the outbox or the manager.
      const { report } = await run('output-deep', { command: [node, fixture('write-output.mjs'), 'deep', '100000'] });
      expect(report.output).toBeNull();
      expect(report.error).toEqual({ code: 'OUTPUT_INVALID', message: `$PULLMAN_OUTPUT is nested deeper than ${MAX_JSON_DEPTH} levels` });
      const atLimit = await run('output-at-limit', { command: [node, fixture('write-output.mjs'), 'deep', String(MAX_JSON_DEPTH)] });
      expect(atLimit.report.error).toBeNull();
      expect(JSON.stringify(atLimit.report.output)).toBe(`${'['.repeat(MAX_JSON_DEPTH)}${']'.repeat(MAX_JSON_DEPTH)}`);
    });

    it('fails an exit-0 task whose output exceeds 1 MiB with OUTPUT_TOO_LARGE', async () => {
      const { report } = await run('output-large', { command: [node, fixture('write-output.mjs'), 'too-large'] });
      expect(report.exitCode).toBe(0);
      expect(report.output).toBeNull();
      expect(report.error?.code).toBe('OUTPUT_TOO_LARGE');
    });

    it('keeps error null for invalid output after a non-zero exit: the exit status explains it', async () => {
      const { report } = await run('output-invalid-fail', { command: [node, fixture('write-output.mjs'), 'invalid', '4'] });
      expect(report.exitCode).toBe(4);
      expect(report.output).toBeNull();
      expect(report.error).toBeNull();
    });

    it('fails an exit-0 task that made $PULLMAN_OUTPUT a directory, and cleans it up', async () => {
      const { report, paths } = await run('output-dir', { command: ['/bin/sh', fixture('output-not-file.sh'), 'dir'] });
      expect(report.exitCode).toBe(0);
      expect(report.output).toBeNull();
      expect(report.error?.code).toBe('OUTPUT_INVALID');
      expect(existsSync(paths.output)).toBe(false);
    });

    it('fails an exit-0 task that made $PULLMAN_OUTPUT a FIFO, without blocking on it', async () => {
      const { report, paths } = await run('output-fifo', { command: ['/bin/sh', fixture('output-not-file.sh'), 'fifo'] });
      expect(report.exitCode).toBe(0);
      expect(report.error?.code).toBe('OUTPUT_INVALID');
      expect(existsSync(paths.output)).toBe(false);
    });

    it('removes an output file, or even a directory, that a crashed run of the same attempt left', async () => {
      for (const leftover of ['file', 'dir'] as const) {
        const workDir = freshWorkDir(`output-left-${leftover}`);
        const t = task({ command: ['true'] });
        const { output } = attemptPaths(workDir, t);
        mkdirSync(dirname(output), { recursive: true });
        if (leftover === 'file') writeFileSync(output, '{"stale":true}');
        else mkdirSync(join(output, 'inside'), { recursive: true });
        const report = await (await startExecution(t, options(workDir))).done;
        expect(report, leftover).toMatchObject({ exitCode: 0, output: null, error: null });
        expect(existsSync(output)).toBe(false);
      }
    });

    it('does not let a previous attempt of the same task leak its output', async () => {
      const workDir = freshWorkDir('output-stale');
      const first = await startExecution(task({ command: [node, fixture('write-output.mjs'), 'json'] }), options(workDir));
      expect((await first.done).output).not.toBeNull();
      const again = await startExecution(task({ command: [node, fixture('write-output.mjs'), 'none'] }), options(workDir));
      expect((await again.done).output).toBeNull();
    });
  });

  describe('startExecution: tails and logs', () => {
    it('keeps the last 64 KiB of huge stdout and stderr, and the full logs on disk', async () => {
      const outLines = 52_429; // ~5 MiB
      const errLines = 10_486; // ~1 MiB
      const { report, paths } = await run('huge', { command: [node, fixture('huge-output.mjs'), String(outLines), String(errLines)] });
      expect(report.exitCode).toBe(0);

      const outSize = outLines * 100 + 'STDOUT-END\n'.length;
      const errSize = errLines * 100 + 'STDERR-END\n'.length;
      expect(statSync(paths.stdoutLog).size).toBe(outSize);
      expect(statSync(paths.stderrLog).size).toBe(errSize);

      expect(Buffer.byteLength(report.stdoutTail, 'utf8')).toBe(65_536);
      expect(Buffer.byteLength(report.stderrTail, 'utf8')).toBe(65_536);
      expect(report.stdoutTail.endsWith(`STDOUT ${String(outLines - 1).padStart(10, '0')} ${'x'.repeat(81)}\nSTDOUT-END\n`)).toBe(true);
      expect(report.stderrTail.endsWith(`STDERR ${String(errLines - 1).padStart(10, '0')} ${'x'.repeat(81)}\nSTDERR-END\n`)).toBe(true);
      // Exactly the end of each stream.
      const outLog = readFileSync(paths.stdoutLog);
      const errLog = readFileSync(paths.stderrLog);
      expect(report.stdoutTail).toBe(outLog.subarray(outLog.length - 65_536).toString('utf8'));
      expect(report.stderrTail).toBe(errLog.subarray(errLog.length - 65_536).toString('utf8'));
    });

    it('opens a log file only for a stream that printed something', async () => {
      const quiet = await run('logs-quiet', { command: ['true'] });
      expect(quiet.report.exitCode).toBe(0);
      expect(existsSync(quiet.paths.stdoutLog)).toBe(false);
      expect(existsSync(quiet.paths.stderrLog)).toBe(false);
      const chatty = await run('logs-out', { shell: 'echo hello' });
      expect(readFileSync(chatty.paths.stdoutLog, 'utf8')).toBe('hello\n');
      expect(existsSync(chatty.paths.stderrLog)).toBe(false);
    });

    it('keeps running and reporting when a log file cannot be written', async () => {
      const workDir = freshWorkDir('logs-broken');
      const t = task({ shell: 'echo still-reported' });
      // A directory where the stdout log should go: opening it fails with EISDIR.
      mkdirSync(attemptPaths(workDir, t).stdoutLog, { recursive: true });
      const report = await (await startExecution(t, options(workDir))).done;
      expect(report).toMatchObject({ exitCode: 0, stdoutTail: 'still-reported\n', error: null });
    });

    it('survives a task that puts a FIFO at its own log\'s path: the log is lost, the tail and the other tasks are not', async () => {
      const workDir = freshWorkDir('log-fifo');
      const fifo = task({ shell: 'mkfifo "$(dirname "$(dirname "$PULLMAN_OUTPUT")")/logs/$PULLMAN_TASK_ID.$PULLMAN_ATTEMPT.stdout.log"; echo hi; sleep 1' }, { taskId: 'fifo' });
      const first = await startExecution(fifo, options(workDir));
      // A blocking open of that FIFO froze the helper (every task) or a thread-pool thread (this one).
      const other = await (await startExecution(task({ shell: 'echo other' }, { taskId: 'other' }), options(workDir))).done;
      expect(other).toMatchObject({ exitCode: 0, stdoutTail: 'other\n' });
      expect(await first.done).toMatchObject({ exitCode: 0, stdoutTail: 'hi\n' });
    });

    it('keeps each task\'s output to its own log and tail when many print at once', async () => {
      const workDir = freshWorkDir('logs-many');
      const ts = Array.from({ length: 12 }, (_, i) => task({ shell: `for n in $(seq 1 300); do echo "task ${i} line $n"; echo "task ${i} err $n" >&2; done` }, { taskId: `many-${i}` }));
      const reports = await Promise.all((await Promise.all(ts.map((t) => startExecution(t, options(workDir))))).map((e) => e.done));
      reports.forEach((r, i) => {
        const lines = (n: number, what: string) => Array.from({ length: n }, (_, k) => `task ${i} ${what} ${k + 1}\n`).join('');
        expect(r.stdoutTail).toBe(lines(300, 'line'));
        expect(r.stderrTail).toBe(lines(300, 'err'));
        expect(readFileSync(attemptPaths(workDir, ts[i]!).stdoutLog, 'utf8')).toBe(lines(300, 'line'));
      });
    });

    it('reports a task whose escaped descendant holds its output open, with what came in the first 2 s', async () => {
      const workDir = freshWorkDir('escaped');
      const pidFile = join(workDir, 'escaped.pid');
      const t0 = Date.now();
      // The task waits for the descendant to have left its group, or the group's kill at the exit could beat it.
      const { report } = await run('escaped-run', { shell: `setsid sh -c 'echo $$ > ${pidFile}.tmp; mv ${pidFile}.tmp ${pidFile}; sleep 0.5; echo late; exec sleep 30' & until [ -s ${pidFile} ]; do sleep 0.01; done; echo main` });
      const escaped = readPid(pidFile);
      try {
        expect(report).toMatchObject({ exitCode: 0, stdoutTail: 'main\nlate\n' });
        // Reported, not waited for until the descendant ends (it sleeps 30 s).
        expect(Date.now() - t0).toBeLessThan(20_000);
      } finally {
        process.kill(escaped, 'SIGKILL');
      }
    });

    it('cuts a multi-byte UTF-8 tail on a character boundary, without a replacement character', async () => {
      const { report } = await run('utf8', { command: [node, fixture('utf8-output.mjs')] });
      expect(report.exitCode).toBe(0);
      for (const tail of [report.stdoutTail, report.stderrTail]) {
        expect(tail.includes('\uFFFD')).toBe(false);
        expect(Buffer.byteLength(tail, 'utf8')).toBeLessThanOrEqual(65_536);
      }
      // 65,536 bytes end with "\n\n"; the 65,534 before hold 21,844 whole "€" and two stray bytes.
      expect(report.stdoutTail).toBe('€'.repeat(21_844) + '\n\n');
      // 65,536 bytes end with "\n"; the 65,535 before hold 16,383 whole "😀" and three stray bytes.
      expect(report.stderrTail).toBe('😀'.repeat(16_383) + '\n');
    });
  });

  describe('startExecution: working directory', () => {
    it('runs in a fresh scratch dir under the work dir and removes it after success', async () => {
      const { report, paths, workDir } = await run('scratch-ok', { command: [node, fixture('print-env.mjs')] });
      expect(report.exitCode).toBe(0);
      const { cwd } = JSON.parse(report.stdoutTail) as { cwd: string };
      expect(cwd).toBe(paths.scratch);
      expect(cwd.startsWith(workDir + '/')).toBe(true);
      expect(existsSync(paths.scratch)).toBe(false);
    });

    it('keeps the scratch dir of a failed attempt when keepFailedScratch is true', async () => {
      const { report, paths } = await run('scratch-keep', { shell: 'echo evidence > left-behind.txt; exit 1' });
      expect(report.exitCode).toBe(1);
      expect(readFileSync(join(paths.scratch, 'left-behind.txt'), 'utf8')).toBe('evidence\n');
    });

    it('removes the scratch dir of a failed attempt when keepFailedScratch is false', async () => {
      const { report, paths } = await run('scratch-drop', { shell: 'echo evidence > left-behind.txt; exit 1' }, { keepFailedScratch: false });
      expect(report.exitCode).toBe(1);
      expect(existsSync(paths.scratch)).toBe(false);
    });

    it('keeps the scratch dir of an attempt that succeeded but broke its output', async () => {
      const { report, paths } = await run('scratch-badout', { command: [node, fixture('write-output.mjs'), 'invalid'] });
      expect(report.error?.code).toBe('OUTPUT_INVALID');
      expect(existsSync(paths.scratch)).toBe(true);
    });

    it('makes the attempt\'s dirs again when an operator removed them, and runs the task where it would have', async () => {
      const workDir = freshWorkDir('dirs-removed');
      expect((await (await startExecution(task({ command: ['true'] }), options(workDir))).done).exitCode).toBe(0);
      for (const dir of ['scratch', 'logs', 'outputs']) rmSync(join(workDir, dir), { recursive: true, force: true });
      const t = task({ shell: 'echo "$PPID $PWD"; echo \'{"ok":1}\' > "$PULLMAN_OUTPUT"' }, { taskId: 'task-2' });
      const report = await (await startExecution(t, options(workDir))).done;
      expect(report).toMatchObject({ exitCode: 0, output: { ok: 1 }, error: null });
      // Forked by the helper, when there is one: it made the dirs, not the worker's fallback.
      expect(report.stdoutTail).toBe(`${helper ? helper.pid : process.pid} ${attemptPaths(workDir, t).scratch}\n`);
      expect(readFileSync(attemptPaths(workDir, t).stdoutLog, 'utf8')).toBe(report.stdoutTail);
    });

    it('runs in spec.cwd when given', async () => {
      const workDir = freshWorkDir('cwd-given');
      const elsewhere = realpathSync(mkdtempSync(join(tmpdir(), 'pullman-exec-cwd-target-')));
      workDirs.push(elsewhere);
      const exec = await startExecution(task({ command: [node, fixture('print-env.mjs')], cwd: elsewhere }), options(workDir));
      const report = await exec.done;
      expect(report.exitCode).toBe(0);
      expect((JSON.parse(report.stdoutTail) as { cwd: string }).cwd).toBe(elsewhere);
      expect(existsSync(elsewhere)).toBe(true); // never removed: it is not ours
    });

    it('fails with SPAWN_FAILED naming a spec.cwd that does not exist', async () => {
      const workDir = freshWorkDir('cwd-missing');
      const missing = join(workDir, 'no-such-dir-here');
      const exec = await startExecution(task({ command: [node, fixture('print-env.mjs')], cwd: missing }), options(workDir));
      const report = await exec.done;
      expect(report.exitCode).toBeNull();
      expect(report.signal).toBeNull();
      expect(report.error?.code).toBe('SPAWN_FAILED');
      expect(report.error?.message).toContain(missing);
    });

    it('fails with SPAWN_FAILED, instead of throwing, for an argument or env value with a NUL byte', async () => {
      // The manager refuses such specs; a worker must survive one from any other manager.
      for (const spec of [{ command: ['echo', 'a\0b'] }, { command: ['true'], env: { X: 'a\0' } }]) {
        const exec = await startExecution(task(spec), options(freshWorkDir('nul')));
        const report = await exec.done;
        expect(exec.pid).toBeUndefined();
        expect(report.error).toMatchObject({ code: 'SPAWN_FAILED', message: expect.stringContaining('null bytes') });
        expect(exec.workDirProblem).toBeNull(); // the task's fault
      }
    });

    it('fails with SPAWN_FAILED before spawning anything for a timeout it cannot arm', async () => {
      // The manager refuses such a timeout; from another source it threw after the spawn, and the
      // process ran on untracked.
      const exec = await startExecution(task({ command: ['sleep', '60'], timeout: 3_000_000_000 }), options(freshWorkDir('huge-timeout')));
      const report = await exec.done;
      expect(exec.pid).toBeUndefined();
      expect(report.error).toMatchObject({ code: 'SPAWN_FAILED', message: expect.stringMatching(/^timeout: /) });
    });

    it('fails with SPAWN_FAILED, instead of throwing, when its files cannot be made in the work dir, and says it is the work dir', async () => {
      const workDir = freshWorkDir('scratch-blocked');
      writeFileSync(join(workDir, 'scratch'), ''); // a file where the scratch dirs go (ENOTDIR / EEXIST)
      const exec = await startExecution(task({ command: ['true'] }), options(workDir));
      const report = await exec.done;
      expect(exec.pid).toBeUndefined();
      expect(report.exitCode).toBeNull();
      expect(report.error?.code).toBe('SPAWN_FAILED');
      expect(report.error?.message).toContain(`cannot prepare the task's files under ${workDir}`);
      expect(exec.workDirProblem).toBe(report.error?.message);
    });

    it('blames no work dir for a task that runs, or fails on its own', async () => {
      const workDir = freshWorkDir('blameless');
      const ok = await startExecution(task({ command: ['true'] }), options(workDir));
      expect((await ok.done).exitCode).toBe(0);
      expect(ok.workDirProblem).toBeNull();
      const missing = await startExecution(task({ command: ['/nonexistent/pullman-test-binary'] }), options(workDir));
      expect((await missing.done).error?.code).toBe('SPAWN_FAILED');
      expect(missing.workDirProblem).toBeNull();
      const badCwd = await startExecution(task({ command: ['true'], cwd: join(workDir, 'nowhere') }), options(workDir));
      expect((await badCwd.done).error?.code).toBe('SPAWN_FAILED');
      expect(badCwd.workDirProblem).toBeNull();
    });

    it('probes a work dir: null when it can hold an attempt, leaving nothing behind; else why not', async () => {
      const workDir = freshWorkDir('probe');
      expect(await probeWorkDir(workDir)).toBeNull();
      expect(readdirSync(join(workDir, 'scratch'))).toEqual([]);
      expect(readdirSync(join(workDir, 'outputs'))).toEqual([]);
      rmSync(join(workDir, 'outputs'), { recursive: true });
      writeFileSync(join(workDir, 'outputs'), '');
      expect(await probeWorkDir(workDir)).toMatch(new RegExp(`^cannot prepare the task's files under ${workDir}: E[A-Z]+ \\(${join(workDir, 'outputs')}`));
      rmSync(join(workDir, 'outputs'));
      expect(await probeWorkDir(workDir)).toBeNull();
    });

    it('fails with SPAWN_FAILED for a missing executable while other tasks exit around it', async () => {
      // Through the helper, a child's exit (SIGCHLD) interrupting the wait for another's exec once
      // made a failed exec look started, and exit 127 as a plain non-zero exit.
      const workDir = freshWorkDir('missing-busy');
      const execs = await Promise.all(Array.from({ length: 40 }, (_, i) => startExecution(task({ command: i % 2 ? ['/nonexistent/pullman-busy'] : ['true'] }, { taskId: `t-${i}` }), options(workDir))));
      const reports = await Promise.all(execs.map((e) => e.done));
      reports.forEach((r, i) => {
        if (i % 2) expect(r.error, `task ${i}`).toMatchObject({ code: 'SPAWN_FAILED', message: expect.stringContaining('ENOENT') });
        else expect(r, `task ${i}`).toMatchObject({ exitCode: 0, error: null });
      });
    });

    it('fails with SPAWN_FAILED when the executable does not exist', async () => {
      const missing = '/nonexistent/pullman-no-such-program';
      const { report } = await run('no-exe', { command: [missing, 'arg'] });
      expect(report.exitCode).toBeNull();
      expect(report.error?.code).toBe('SPAWN_FAILED');
      expect(report.error?.message).toContain(missing);
    });
  });
});
