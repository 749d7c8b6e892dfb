/**
 * Runs one task attempt as a child process in its own process group and reports what happened.
 *
 * Termination policy (after execa): SIGTERM to the whole group, SIGKILL after a grace period,
 * and always await the exit. When the group leader exits, the group is SIGKILLed too, so a
 * task's background processes (`sleep 100 &`) never outlive it.
 *
 * Two ways to fork, one behaviour: through the spawn helper when the worker has one (cheap; it
 * copies the task's output into the logs and reports the tails with the exit), else Node's
 * spawn in this process (stdout and stderr through socket pairs into the logs and the tails).
 */
import { spawn } from 'node:child_process';
import { closeSync, constants as fsConstants, createWriteStream, fstatSync, openSync, type WriteStream } from 'node:fs';
import { mkdir, open, rm, rmdir, stat, unlink, writeFile, type FileHandle } from 'node:fs/promises';
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
import { killByEnvironment, killGroup } from './processes.js';
import type { Launch, SpawnHelper } from './spawn-helper.js';

export interface ExecutorOptions {
  workDir: string;
  workerId: string;
  /** Time between SIGTERM and SIGKILL when stopping a task. */
  killGraceMs: number;
  /** Keep the scratch directory of failed attempts for debugging. */
  keepFailedScratch: boolean;
  /** Base environment for tasks (the worker's own, by default). */
  baseEnv?: NodeJS.ProcessEnv;
  /** Starts tasks cheaply (spawn-helper.ts); without one, or once it is lost, the worker forks them itself. */
  helper?: SpawnHelper | null;
}

/** Why an execution was stopped from outside, if it was. */
export type StopReason = 'timeout' | 'cancel' | 'release' | 'shutdown'
  /** The spawn helper died while the task ran: the task was killed, and goes back to the queue. */
  | 'lost';

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
    return tailText(Buffer.concat(this.chunks), this.limit);
  }
}

/**
 * The last `limit` bytes of `all` as text: cut at the byte limit, then a partial UTF-8 sequence
 * at the start dropped rather than shown as a replacement character.
 */
function tailText(all: Buffer, limit: number): string {
  let buf = all.length > limit ? all.subarray(all.length - limit) : all;
  let skip = 0;
  while (skip < 3 && skip < buf.length && (buf[skip]! & 0xc0) === 0x80) skip++;
  buf = buf.subarray(skip);
  return buf.toString('utf8');
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
  const helper = o.helper ?? null;
  // The helper makes the attempt's files itself, with a few plain system calls; here each is a
  // thread-pool round trip. Without it, or when it could not (then the check here says why), here.
  if (!helper) {
    const workDirProblem = await prepareAttempt(o.workDir, paths);
    if (workDirProblem) return workDirFailure(task, workDirProblem);
  }
  const started = performance.now();

  // A missing cwd makes spawn fail with ENOENT naming the executable, which misleads; say it.
  // (The scratch dir, the default, is made by the helper or was just made.)
  const cwdProblem = spec.cwd === undefined ? null : await stat(cwd).then((s) => (s.isDirectory() ? null : 'is not a directory'), () => 'does not exist');
  if (cwdProblem) return failedToStart(task, { code: 'SPAWN_FAILED', message: `cwd ${cwd} ${cwdProblem}` }, started);

  // Before the spawn: a spec that throws here (a timeout past MAX_DURATION_MS from a manager that
  // did not check it) must not leave a process nobody tracks.
  let timeoutMs: number | null;
  try {
    timeoutMs = taskTimeoutMs(spec);
  } catch (err) {
    return failedToStart(task, { code: 'SPAWN_FAILED', message: `timeout: ${(err as Error).message}` }, started);
  }

  const attempt: Attempt = { task, o, paths, started, timeoutMs };
  if (helper) {
    const launch = await helper.launch({ file, args, cwd, env, scratch: paths.scratch, output: paths.output, stdoutLog: paths.stdoutLog, stderrLog: paths.stderrLog });
    if (launch.kind === 'started') return superviseHelped(attempt, launch);
    if (launch.kind === 'vanished') return vanished(task, o.workerId, started);
    if (launch.kind === 'failed') {
      const message = launch.stage === 'chdir' ? `cwd ${cwd}: ${launch.errno}` : `cannot run ${JSON.stringify(file)}: ${launch.errno}`;
      return failedToStart(task, { code: 'SPAWN_FAILED', message }, started);
    }
    // Declined (files it could not make, and the check here tells whether the work dir is at
    // fault; or a NUL its wire cannot carry, which the spawn below fails), or a helper already
    // gone: the worker forks the task itself.
    const workDirProblem = await prepareAttempt(o.workDir, paths);
    if (workDirProblem) return workDirFailure(task, workDirProblem);
  }
  return spawnInProcess(attempt, file, args, cwd, env);
}

const workDirFailure = (task: TaskAssignment, problem: string): Execution => ({ ...failedToStart(task, { code: 'SPAWN_FAILED', message: problem }, performance.now()), workDirProblem: problem });

/** What every way of running an attempt shares. */
interface Attempt {
  task: TaskAssignment;
  o: ExecutorOptions;
  paths: ReturnType<typeof attemptPaths>;
  started: number;
  timeoutMs: number | null;
}

/**
 * The stop and timeout policy of one running task's process group, whoever forked it: SIGTERM
 * to the group, SIGKILL after the grace period, and after the leader's exit, SIGKILL to what is
 * left of the group.
 */
class GroupControl {
  stopReason: StopReason | null = null;
  private exited = false;
  private killTimer: NodeJS.Timeout | null = null;
  private readonly timeoutTimer: NodeJS.Timeout | null;

  constructor(
    private readonly pid: number | undefined,
    private readonly killGraceMs: number,
    timeoutMs: number | null,
  ) {
    this.timeoutTimer = timeoutMs === null ? null : setTimeout(() => this.stop('timeout'), timeoutMs);
  }

  kill(signal: NodeJS.Signals): void {
    killGroup(this.pid, signal);
  }

  stop(reason: StopReason): void {
    if (this.stopReason !== null || this.exited) return;
    this.stopReason = reason;
    this.kill('SIGTERM');
    this.killTimer = setTimeout(() => this.kill('SIGKILL'), this.killGraceMs);
    this.killTimer.unref();
  }

  /** The leader is gone: no more stops, and anything the task left running in its group goes. */
  exit(): void {
    this.exited = true;
    if (this.timeoutTimer) clearTimeout(this.timeoutTimer);
    if (this.killTimer) clearTimeout(this.killTimer);
    this.kill('SIGKILL');
  }

  execution(task: TaskAssignment, done: Promise<ExecutionReport>): Execution {
    const control = this;
    return {
      task,
      pid: this.pid,
      done,
      stop: (reason) => this.stop(reason),
      get stopReason() {
        return control.stopReason;
      },
      workDirProblem: null,
    };
  }
}

/**
 * The report of an attempt whose process is gone: its output read, its output file and (unless
 * kept for a failure) its scratch dir removed.
 */
async function finish(a: Attempt, control: GroupControl, end: { code: number | null; signal: NodeJS.Signals | null; spawnError: ErrorInfo | null; stdoutTail: string; stderrTail: string; outputFile: boolean }): Promise<ExecutionReport> {
  const { paths, o } = a;
  const stopReason = control.stopReason;
  const durationMs = Math.round(performance.now() - a.started);
  const { output, error: outputError } = end.spawnError || !end.outputFile ? { output: null, error: null } : await readOutput(paths.output);
  const report: ExecutionReport = {
    exitCode: end.spawnError ? null : end.code,
    signal: end.signal,
    timedOut: stopReason === 'timeout',
    cancelled: stopReason === 'cancel',
    durationMs,
    stdoutTail: end.stdoutTail,
    stderrTail: end.stderrTail,
    output,
    // A broken $PULLMAN_OUTPUT fails an otherwise successful run; after a failed run the
    // exit status is the better explanation, so it is not masked.
    error: end.spawnError ?? (end.code === 0 ? outputError : null),
  };
  const succeeded = report.exitCode === 0 && report.error === null && stopReason === null;
  // The output travels in the result from here on; both removals run at once.
  await Promise.all([
    end.outputFile ? removeFile(paths.output).catch(() => {}) : null,
    succeeded || !o.keepFailedScratch ? removeDir(paths.scratch).catch(() => {}) : null,
  ]);
  return report;
}

/**
 * A task the spawn helper started. The helper copied its output into the logs and reports the
 * exit with the tails, and whether the task left an output file.
 */
function superviseHelped(a: Attempt, launch: Extract<Launch, { kind: 'started' }>): Execution {
  const control = new GroupControl(launch.pid, a.o.killGraceMs, a.timeoutMs);
  const done = launch.exit.then((exit) => {
    if (exit.kind === 'lost') {
      // Nobody can report its exit any more: no SIGTERM and grace, exit() kills the group now.
      control.stopReason ??= 'lost';
      control.exit();
      return finish(a, control, { code: null, signal: null, spawnError: HELPER_LOST, stdoutTail: '', stderrTail: '', outputFile: true });
    }
    control.exit();
    // No output file, as the helper saw after the exit: nothing to read or remove.
    return finish(a, control, { code: exit.code, signal: exit.signal, spawnError: null, stdoutTail: tailText(exit.stdoutTail, MAX_TAIL_BYTES), stderrTail: tailText(exit.stderrTail, MAX_TAIL_BYTES), outputFile: exit.outputFile });
  });
  return control.execution(a.task, done);
}

const HELPER_LOST: ErrorInfo = { code: 'SPAWN_FAILED', message: 'the spawn helper died while the task ran; the task was stopped' };

/**
 * A task whose start request went to a helper that then died: it may run, unseen (the helper
 * died between its fork and its answer). Such a process is found by its environment and killed
 * with its group, and the task given back (stopReason 'lost'), never started again here: it
 * would run twice.
 */
async function vanished(task: TaskAssignment, workerId: string, started: number): Promise<Execution> {
  await killByEnvironment([`PULLMAN_TASK_ID=${task.taskId}`, `PULLMAN_ATTEMPT=${task.attempt}`, `PULLMAN_WORKER_ID=${workerId}`]);
  const e = failedToStart(task, { code: 'SPAWN_FAILED', message: 'the spawn helper died while starting the task' }, started);
  return { ...e, stopReason: 'lost' };
}

/** The worker forks the task itself: Node's spawn, stdout and stderr through pipes. */
function spawnInProcess(a: Attempt, file: string, args: readonly string[], cwd: string, env: NodeJS.ProcessEnv): Execution {
  const { task, paths, started } = a;
  // Log files are opened on the first byte: a task that prints nothing leaves none behind.
  const stdoutLog = new LazyLog(paths.stdoutLog);
  const stderrLog = new LazyLog(paths.stderrLog);
  const stdoutTail = new Tail(MAX_TAIL_BYTES);
  const stderrTail = new Tail(MAX_TAIL_BYTES);

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
  const control = new GroupControl(child.pid, a.o.killGraceMs, a.timeoutMs);

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
      control.kill('SIGKILL');
      setTimeout(() => {
        child.stdout!.destroy();
        child.stderr!.destroy();
      }, 2_000).unref();
    });
    // 'close' waits for stdio to end as well as for the exit, so the tails are complete.
    child.once('close', (code, signal) => {
      control.exit(); // reap anything the task left running in its group
      void (async () => {
        await Promise.all([stdoutLog.end(), stderrLog.end()]);
        resolve(await finish(a, control, { code, signal: signal ?? null, spawnError, stdoutTail: stdoutTail.toString(), stderrTail: stderrTail.toString(), outputFile: true }));
      })();
    });
  });
  return control.execution(task, done);
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
  const cannotRead = (err: unknown) => ({ output: null, error: { code: 'OUTPUT_INVALID', message: `$PULLMAN_OUTPUT cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` } });
  // Opened once, without blocking, and checked on the open file: checked by path first, a
  // FIFO swapped in before the read (by a descendant that left the task's group) blocked a
  // thread-pool thread forever, and this result with it.
  let file: FileHandle;
  try {
    file = await open(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOENT' || code === 'ENOTDIR' ? { output: null, error: null } : cannotRead(err);
  }
  let text: string;
  try {
    const s = await file.stat();
    // A directory or a FIFO: nothing a task promised as its output.
    if (!s.isFile()) return { output: null, error: { code: 'OUTPUT_INVALID', message: '$PULLMAN_OUTPUT is not a regular file' } };
    if (s.size > MAX_OUTPUT_BYTES) return { output: null, error: { code: 'OUTPUT_TOO_LARGE', message: `$PULLMAN_OUTPUT is ${s.size} bytes; the limit is ${MAX_OUTPUT_BYTES}` } };
    // What fstat saw, no more: a descendant still writing cannot grow it past the limit.
    const buf = Buffer.alloc(s.size);
    const { bytesRead } = await file.read(buf, 0, s.size, 0);
    text = buf.subarray(0, bytesRead).toString('utf8');
  } catch (err) {
    return cannotRead(err);
  } finally {
    await file.close().catch(() => {});
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

const LOG_OPEN_FLAGS = fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_TRUNC | fsConstants.O_NONBLOCK | fsConstants.O_NOFOLLOW;

/**
 * A log file created when the first chunk arrives. A file that cannot be written (disk full,
 * out of descriptors, its directory removed) loses the full log, never the task: the result
 * still carries the tails.
 */
class LazyLog {
  private stream: WriteStream | null = null;
  private broken = false;
  constructor(private readonly path: string) {}
  write(chunk: Buffer): void {
    if (this.broken) return;
    if (!this.stream) {
      // A regular file only, opened without blocking and not through a symlink: a task can put a
      // FIFO at its own log's path, and a blocking open of one nobody reads held a thread-pool
      // thread forever, and the task's result with it. Opened here, at once: such an open
      // returns in microseconds, or fails (ENXIO, ELOOP), and the full log is lost.
      let fd: number;
      try {
        fd = openSync(this.path, LOG_OPEN_FLAGS, 0o666);
      } catch {
        this.broken = true;
        return;
      }
      if (!fstatSync(fd).isFile()) {
        closeSync(fd);
        this.broken = true;
        return;
      }
      this.stream = createWriteStream('', { fd });
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
