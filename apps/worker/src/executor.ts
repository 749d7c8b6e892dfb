/**
 * Runs one task attempt as a child process in its own process group and reports what happened.
 *
 * Termination policy (after execa): SIGTERM to the whole group, SIGKILL after a grace period,
 * and always await the exit. When the group leader exits, the group is SIGKILLed too, so a
 * task's background processes (`sleep 100 &`) never outlive it.
 */
import { spawn } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, readFile, rm, rmdir, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  MAX_JSON_DEPTH,
  MAX_OUTPUT_BYTES,
  MAX_TAIL_BYTES,
  jsonDepthWithin,
  taskTimeoutMs,
  type ErrorInfo,
  type ExecutionReport,
  type TaskAssignment,
} from '@pullman/protocol';

export interface ExecutorOptions {
  workDir: string;
  workerId: string;
  /** Time between SIGTERM and SIGKILL when stopping a task. */
  killGraceMs: number;
  /** Keep the scratch directory of failed attempts for debugging. */
  keepFailedScratch: boolean;
  /** Base environment for tasks (the worker's own, by default). */
  baseEnv?: NodeJS.ProcessEnv;
}

/** Why an execution was stopped from outside, if it was. */
export type StopReason = 'timeout' | 'cancel' | 'release' | 'shutdown';

export interface Execution {
  readonly task: TaskAssignment;
  readonly pid: number | undefined;
  /** Settles when the process group is gone; never rejects. */
  readonly done: Promise<ExecutionReport>;
  /** Stops the task: SIGTERM to the group, SIGKILL after the grace period. Idempotent. */
  stop(reason: StopReason): void;
  readonly stopReason: StopReason | null;
  /**
   * Why the attempt never started because the worker's own files for it could not be made (a
   * full disk, a read-only or broken work dir), or null. `done` then reports SPAWN_FAILED, but
   * the fault is the worker's, not the task's: the daemon gives such a task back and takes no
   * work until the work dir is usable again (daemon.ts, pauseForWorkDir).
   */
  readonly workDirProblem: string | null;
}

/** Keeps the last `limit` bytes written to it. */
class Tail {
  private chunks: Buffer[] = [];
  private bytes = 0;
  constructor(private readonly limit: number) {}
  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    while (this.bytes - this.chunks[0]!.length >= this.limit) this.bytes -= this.chunks.shift()!.length;
  }
  toString(): string {
    const all = Buffer.concat(this.chunks);
    // Cut at the byte limit, then drop a partial UTF-8 sequence at the start rather than
    // emitting a replacement character.
    let buf = all.length > this.limit ? all.subarray(all.length - this.limit) : all;
    let skip = 0;
    while (skip < 3 && skip < buf.length && (buf[skip]! & 0xc0) === 0x80) skip++;
    buf = buf.subarray(skip);
    return buf.toString('utf8');
  }
}

export function attemptPaths(workDir: string, task: Pick<TaskAssignment, 'taskId' | 'attempt'>) {
  const base = `${task.taskId}.${task.attempt}`;
  return {
    scratch: join(workDir, 'scratch', base),
    stdoutLog: join(workDir, 'logs', `${base}.stdout.log`),
    stderrLog: join(workDir, 'logs', `${base}.stderr.log`),
    output: join(workDir, 'outputs', `${base}.json`),
  };
}

/**
 * Makes what an attempt needs under the work dir: its scratch dir, logs/ and outputs/ (made per
 * task, not once: an operator may clean the work dir), and no stale output file. Returns null,
 * or why it cannot (the error code and path), instead of throwing: an error escaping a task's
 * start used to kill the worker with every task it ran.
 */
async function prepareAttempt(workDir: string, paths: { scratch: string; output: string }): Promise<string | null> {
  // allSettled, not all: with all, the first failure returned while the other calls still ran,
  // and one of them could make a directory after the caller had moved on (a cleanup of the work
  // dir could meet it half-way).
  const outcomes = await Promise.allSettled([mkdir(paths.scratch, { recursive: true }), mkdir(join(workDir, 'logs'), { recursive: true }), mkdir(join(workDir, 'outputs'), { recursive: true }), removeFile(paths.output)]);
  const failed = outcomes.find((o) => o.status === 'rejected');
  return failed ? `cannot prepare the task's files under ${workDir}: ${describeFsError(failed.reason)}` : null;
}

/**
 * Checks that the work dir can hold an attempt again: makes what an attempt makes, writes a
 * small file into its scratch dir (a full disk may still allow a mkdir), and removes it all.
 * Returns null, or why not.
 */
export async function probeWorkDir(workDir: string): Promise<string | null> {
  const scratch = join(workDir, 'scratch', `.probe-${process.pid}`);
  const problem = await prepareAttempt(workDir, { scratch, output: join(workDir, 'outputs', `.probe-${process.pid}.json`) });
  if (problem) return problem;
  try {
    await writeFile(join(scratch, 'probe'), 'pullman work dir probe\n');
    return null;
  } catch (err) {
    return `cannot write under ${workDir}: ${describeFsError(err)}`;
  } finally {
    await rm(scratch, { recursive: true, force: true }).catch(() => {});
  }
}

function describeFsError(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return `${e.code ?? e.message}${e.path ? ` (${e.path})` : ''}`;
}

export async function startExecution(task: TaskAssignment, o: ExecutorOptions): Promise<Execution> {
  const paths = attemptPaths(o.workDir, task);
  const workDirProblem = await prepareAttempt(o.workDir, paths);
  if (workDirProblem) return { ...failedToStart(task, { code: 'SPAWN_FAILED', message: workDirProblem }, performance.now()), workDirProblem };
  const { spec } = task;
  const cwd = spec.cwd ?? paths.scratch;
  const env: NodeJS.ProcessEnv = {
    ...(o.baseEnv ?? process.env),
    ...spec.env,
    PULLMAN_TASK_ID: task.taskId,
    PULLMAN_JOB_ID: task.jobId,
    PULLMAN_TASK_KEY: task.key ?? '',
    PULLMAN_ATTEMPT: String(task.attempt),
    PULLMAN_WORKER_ID: o.workerId,
    PULLMAN_OUTPUT: paths.output,
    PULLMAN_SCRATCH: paths.scratch,
  };
  const [file, args] = spec.shell !== undefined ? ['/bin/sh', ['-c', spec.shell]] : [spec.command![0]!, spec.command!.slice(1)];
  const started = performance.now();

  // A missing cwd makes spawn fail with ENOENT naming the executable, which misleads; say it.
  // (The scratch dir, the default, was just made.)
  const cwdProblem = spec.cwd === undefined ? null : await stat(cwd).then((s) => (s.isDirectory() ? null : 'is not a directory'), () => 'does not exist');
  if (cwdProblem) return failedToStart(task, { code: 'SPAWN_FAILED', message: `cwd ${cwd} ${cwdProblem}` }, started);

  // Log files are opened on the first byte: a task that prints nothing leaves none behind.
  const stdoutLog = new LazyLog(paths.stdoutLog);
  const stderrLog = new LazyLog(paths.stderrLog);
  const stdoutTail = new Tail(MAX_TAIL_BYTES);
  const stderrTail = new Tail(MAX_TAIL_BYTES);

  // Before the spawn: a spec that throws here (a timeout past MAX_DURATION_MS from a manager that
  // did not check it) must not leave a process nobody tracks.
  let timeoutMs: number | null;
  try {
    timeoutMs = taskTimeoutMs(spec);
  } catch (err) {
    return failedToStart(task, { code: 'SPAWN_FAILED', message: `timeout: ${(err as Error).message}` }, started);
  }

  // detached: the child leads a new process group, so one kill(-pid) reaches every descendant.
  let child: ReturnType<typeof spawn>;
  try {
    child = spawn(file, args, { cwd, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    // Thrown, not emitted, for arguments the OS cannot take (a NUL byte in argv or env): the
    // task's fault, so it fails like any spawn failure. Uncaught, it ended the worker, and
    // then every worker the task went to next.
    return failedToStart(task, { code: 'SPAWN_FAILED', message: `cannot run ${JSON.stringify(file)}: ${(err as Error).message}` }, started);
  }
  let stopReason: StopReason | null = null;
  let killTimer: NodeJS.Timeout | null = null;
  let exited = false;

  const killGroup = (signal: NodeJS.Signals) => {
    if (child.pid === undefined) return;
    try {
      process.kill(-child.pid, signal);
    } catch {
      // ESRCH: the group is already gone.
    }
  };
  const stop = (reason: StopReason) => {
    if (stopReason !== null || exited) return;
    stopReason = reason;
    killGroup('SIGTERM');
    killTimer = setTimeout(() => killGroup('SIGKILL'), o.killGraceMs);
    killTimer.unref();
  };

  const timeoutTimer = timeoutMs === null ? null : setTimeout(() => stop('timeout'), timeoutMs);

  child.stdout!.on('data', (d: Buffer) => {
    stdoutTail.push(d);
    stdoutLog.write(d);
  });
  child.stderr!.on('data', (d: Buffer) => {
    stderrTail.push(d);
    stderrLog.write(d);
  });

  const done = new Promise<ExecutionReport>((resolve) => {
    let spawnError: ErrorInfo | null = null;
    child.once('error', (err: NodeJS.ErrnoException) => {
      spawnError = { code: 'SPAWN_FAILED', message: `cannot run ${JSON.stringify(file)}: ${err.code ?? err.message}` };
    });
    // A descendant that left the group (setsid) can hold our pipes open after the exit; don't
    // wait for it forever.
    child.once('exit', () => {
      killGroup('SIGKILL');
      setTimeout(() => {
        child.stdout!.destroy();
        child.stderr!.destroy();
      }, 2_000).unref();
    });
    // 'close' waits for stdio to end as well as for the exit, so the tails are complete.
    child.once('close', (code, signal) => {
      exited = true;
      if (timeoutTimer) clearTimeout(timeoutTimer);
      if (killTimer) clearTimeout(killTimer);
      killGroup('SIGKILL'); // reap anything the task left running in its group
      void (async () => {
        await Promise.all([stdoutLog.end(), stderrLog.end()]);
        const durationMs = Math.round(performance.now() - started);
        const { output, error: outputError } = spawnError ? { output: null, error: null } : await readOutput(paths.output);
        const report: ExecutionReport = {
          exitCode: spawnError ? null : code,
          signal: signal ?? null,
          timedOut: stopReason === 'timeout',
          cancelled: stopReason === 'cancel',
          durationMs,
          stdoutTail: stdoutTail.toString(),
          stderrTail: stderrTail.toString(),
          output,
          // A broken $PULLMAN_OUTPUT fails an otherwise successful run; after a failed run the
          // exit status is the better explanation, so it is not masked.
          error: spawnError ?? (code === 0 ? outputError : null),
        };
        const succeeded = report.exitCode === 0 && report.error === null && stopReason === null;
        // The output travels in the result from here on; both removals run at once.
        await Promise.all([
          removeFile(paths.output).catch(() => {}),
          succeeded || !o.keepFailedScratch ? removeDir(paths.scratch).catch(() => {}) : null,
        ]);
        resolve(report);
      })();
    });
  });

  return {
    task,
    pid: child.pid,
    done,
    stop,
    get stopReason() {
      return stopReason;
    },
    workDirProblem: null,
  };
}

function failedToStart(task: TaskAssignment, error: ErrorInfo, started: number): Execution {
  const report: ExecutionReport = {
    exitCode: null,
    signal: null,
    timedOut: false,
    cancelled: false,
    durationMs: Math.round(performance.now() - started),
    stdoutTail: '',
    stderrTail: '',
    output: null,
    error,
  };
  return { task, pid: undefined, done: Promise.resolve(report), stop: () => {}, stopReason: null, workDirProblem: null };
}

/**
 * Reads the JSON a task wrote to $PULLMAN_OUTPUT. No file means no output. A file that is not
 * JSON, or larger than 1 MiB, fails the attempt: the task promised a result and broke it.
 */
async function readOutput(path: string): Promise<{ output: unknown; error: ErrorInfo | null }> {
  let size: number;
  try {
    const s = await stat(path);
    // A directory or a FIFO would make the read below throw or block forever.
    if (!s.isFile()) return { output: null, error: { code: 'OUTPUT_INVALID', message: '$PULLMAN_OUTPUT is not a regular file' } };
    size = s.size;
  } catch {
    return { output: null, error: null };
  }
  if (size > MAX_OUTPUT_BYTES) return { output: null, error: { code: 'OUTPUT_TOO_LARGE', message: `$PULLMAN_OUTPUT is ${size} bytes; the limit is ${MAX_OUTPUT_BYTES}` } };
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    return { output: null, error: { code: 'OUTPUT_INVALID', message: `$PULLMAN_OUTPUT cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` } };
  }
  if (text.trim() === '') return { output: null, error: null };
  let output: unknown;
  try {
    output = JSON.parse(text);
  } catch (err) {
    return { output: null, error: { code: 'OUTPUT_INVALID', message: `$PULLMAN_OUTPUT is not valid JSON: ${(err as Error).message}` } };
  }
  // Parsed, but too deep to serialise again for the outbox and the manager (MAX_JSON_DEPTH).
  if (!jsonDepthWithin(output)) return { output: null, error: { code: 'OUTPUT_INVALID', message: `$PULLMAN_OUTPUT is nested deeper than ${MAX_JSON_DEPTH} levels` } };
  return { output, error: null };
}

/**
 * A log file created when the first chunk arrives. A file that cannot be written (disk full,
 * out of descriptors, its directory removed) loses the full log, never the task: the result
 * still carries the tails.
 */
class LazyLog {
  private stream: WriteStream | null = null;
  constructor(private readonly path: string) {}
  write(chunk: Buffer): void {
    if (!this.stream) {
      this.stream = createWriteStream(this.path);
      this.stream.on('error', () => this.stream?.destroy());
    }
    if (!this.stream.destroyed) this.stream.write(chunk);
  }
  end(): Promise<void> {
    const s = this.stream;
    if (!s || s.destroyed) return Promise.resolve();
    return new Promise((resolve) => s.end(() => resolve()).once('error', () => resolve()));
  }
}

/**
 * Removes a path with one cheap call, `unlink` for a file or `rmdir` for an empty directory (the
 * usual cases), and falls back to a recursive rm when the path turns out to hold more: a task
 * may have made its output path a directory, or left files in its scratch dir.
 */
async function removeFast(path: string, quick: (path: string) => Promise<void>, fallBackOn: readonly string[]): Promise<void> {
  try {
    await quick(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? '';
    if (code === 'ENOENT') return;
    if (fallBackOn.includes(code)) await rm(path, { recursive: true, force: true });
    else throw err;
  }
}
const removeFile = (path: string) => removeFast(path, unlink, ['EISDIR', 'EPERM']);
const removeDir = (path: string) => removeFast(path, rmdir, ['ENOTEMPTY', 'EEXIST']);
