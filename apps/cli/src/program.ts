/**
 * The `pullman` command line: every command of CONTRACT.md on top of @pullman/client.
 * `runCli` returns the exit code; main.ts only calls it and exits.
 */
import { createWriteStream, readFileSync } from 'node:fs';
import { once } from 'node:events';
import { basename, resolve } from 'node:path';
import { finished } from 'node:stream/promises';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { PullmanClient } from '@pullman/client';
import { JOB_STATES, PULLMAN_VERSION, TASK_STATES, parseDuration, parseJobId, parseTaskId, type Job, type TaskDefaults } from '@pullman/protocol';
import { CliError, EXIT, explain, type ExitCode } from './errors.js';
import { jobDetail, jobsTable, taskDetail, tasksTable, workersTable } from './format.js';
import { fileSource, readTaskSpecs } from './input.js';
import { countsText, createProgress } from './progress.js';
import { TOKEN_HINT, resolveToken } from './token.js';

interface GlobalOptions {
  url: string;
  token?: string;
  caFile?: string;
  json?: boolean;
}

/** What every action gets: the client, the output mode, and writers. */
interface Context {
  client: PullmanClient;
  json: boolean;
  out(text: string): void;
  info(text: string): void;
}

const DEFAULT_URL = 'http://127.0.0.1:8080';

export async function runCli(argv: readonly string[], env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): Promise<ExitCode> {
  let exitCode: ExitCode = EXIT.OK;
  const program = buildProgram(env, cwd, (code) => (exitCode = code));
  try {
    await program.parseAsync(argv as string[], { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT.OK : EXIT.USAGE; // commander printed it
    const { message, exitCode: code } = explain(err, TOKEN_HINT);
    process.stderr.write(`pullman: ${message}\n`);
    return code;
  }
  return exitCode;
}

function buildProgram(env: NodeJS.ProcessEnv, cwd: string, setExit: (code: ExitCode) => void): Command {
  const program = new Command('pullman')
    .description('Submit, watch and manage batch jobs on a Pullman manager.\n\nExit codes: 0 ok, 1 job failed (or the manager refused the request), 2 usage error, 3 connection or auth error.')
    .version(PULLMAN_VERSION)
    .addOption(new Option('--url <url>', 'manager URL').env('PULLMAN_URL').default(DEFAULT_URL))
    .addOption(new Option('--token <token>', 'admin token (else PULLMAN_TOKEN_FILE, else ./.pullman/admin.token)').env('PULLMAN_TOKEN'))
    .addOption(new Option('--ca-file <file>', 'extra CA certificate (PEM) for an https manager').env('PULLMAN_CA_FILE'))
    .option('--json', 'machine-readable output')
    .showSuggestionAfterError(true)
    .configureOutput({
      // One line, prefixed, for every usage error (commander's own start with "error: ").
      outputError: (text, write) => write(`pullman: ${text.replace(/^error: /, '').trimEnd()}\n`),
    });
  program.exitOverride();

  /** Wraps an action: builds the context from the global options, runs, records the exit code. */
  const action = <A extends unknown[]>(fn: (ctx: Context, ...args: A) => Promise<ExitCode | void>) =>
    async (...args: unknown[]) => {
      const cmd = args[args.length - 1] as Command;
      const ctx = contextFrom(cmd.optsWithGlobals() as GlobalOptions, env, cwd);
      const code = await fn(ctx, ...(args.slice(0, -1) as A));
      setExit(code ?? EXIT.OK);
    };

  program
    .command('submit')
    .description('submit a job from FILE (or - for stdin): NDJSON TaskSpecs, a JSON array of them, or with --lines one shell command per line; prints the job id')
    .argument('<file>', 'input file, or - for stdin')
    .option('--name <name>', 'job name (default: the file name)')
    .option('--lines', 'one shell command per line (blank lines and # comments skipped; keys line-N)')
    .option('--wait', 'show progress until the job finishes; exit 0 if every task succeeded, 1 otherwise')
    .option('--timeout <duration>', 'default timeout for every task (e.g. 30s, 5m)', durationArg)
    .option('--retries <n>', 'default retries for every task', intArg(0, 100))
    .option('--cwd <dir>', 'default working directory for every task (default: a fresh scratch dir per attempt)')
    .option('--job <id>', 'add the tasks to this open job instead of creating one', jobIdArg)
    .option('--open', 'leave the job open for more tasks (seal it later with another submit without --open)')
    .action(action(submit));

  program
    .command('jobs')
    .description('list jobs, newest first')
    .addOption(new Option('--state <state>', 'only jobs in this state').choices(JOB_STATES))
    .option('--limit <n>', 'at most this many', intArg(1, 1_000_000), 50)
    .action(action(async (ctx, opts: { state?: (typeof JOB_STATES)[number]; limit: number }) => {
      const jobs: Job[] = [];
      for await (const j of ctx.client.jobs({ state: opts.state, pageSize: Math.min(opts.limit, 1000) })) {
        jobs.push(j);
        if (jobs.length >= opts.limit) break;
      }
      ctx.out(ctx.json ? JSON.stringify({ jobs }) : jobsTable(jobs));
    }));

  program
    .command('job')
    .description('show a job; --watch shows progress until it finishes (exit 0 if every task succeeded, 1 otherwise)')
    .argument('<id>', 'job id (job-N)', jobIdArg)
    .option('--watch', 'show progress until the job finishes')
    .action(action(async (ctx, id: string, opts: { watch?: boolean }) => {
      if (!opts.watch) {
        const job = await ctx.client.getJob(id);
        ctx.out(ctx.json ? JSON.stringify(job) : jobDetail(job));
        return;
      }
      return watch(ctx, id);
    }));

  program
    .command('tasks')
    .description("list a job's tasks in submission order")
    .argument('<job>', 'job id (job-N)', jobIdArg)
    .addOption(new Option('--state <state>', 'only tasks in this state').choices(TASK_STATES))
    .action(action(async (ctx, jobId: string, opts: { state?: (typeof TASK_STATES)[number] }) => {
      const tasks = [];
      for await (const t of ctx.client.tasks(jobId, { state: opts.state })) tasks.push(t);
      ctx.out(ctx.json ? JSON.stringify({ tasks }) : tasksTable(tasks));
    }));

  program
    .command('task')
    .description('show a task with its result and attempt history')
    .argument('<id>', 'task id (task-N)', taskIdArg)
    .action(action(async (ctx, id: string) => {
      const task = await ctx.client.getTask(id);
      ctx.out(ctx.json ? JSON.stringify(task) : taskDetail(task));
    }));

  program
    .command('results')
    .description('results of the finished tasks as NDJSON, one line per task: {taskId,key,state,exitCode,output,durationMs,attempts,error}')
    .argument('<job>', 'job id (job-N)', jobIdArg)
    .option('-o, --output <file>', 'write to FILE instead of stdout')
    .action(action(async (ctx, jobId: string, opts: { output?: string }) => results(ctx, jobId, opts.output)));

  program
    .command('cancel')
    .description('cancel a job (job-N: queued tasks cancelled, running ones killed) or one task (task-N)')
    .argument('<id>', 'job or task id')
    .action(action(async (ctx, id: string) => {
      if (parseJobId(id) !== null) {
        const job = await ctx.client.cancelJob(id);
        ctx.out(ctx.json ? JSON.stringify(job) : `${job.id}: ${job.state} (${countsText({ done: job.counts.succeeded, ...job.counts })})`);
      } else if (parseTaskId(id) !== null) {
        const task = await ctx.client.cancelTask(id);
        ctx.out(ctx.json ? JSON.stringify(task) : `${task.id}: ${task.state}${task.state === 'cancelled' ? '' : ' (already finished; unchanged)'}`);
      } else {
        throw new CliError(`${JSON.stringify(id)} is neither a job id (job-N) nor a task id (task-N)`, EXIT.USAGE);
      }
    }));

  program
    .command('retry')
    .description('requeue the failed tasks of a job with a fresh retry budget')
    .argument('<job>', 'job id (job-N)', jobIdArg)
    .addOption(new Option('--state <state>', 'which tasks to requeue').choices(['failed', 'cancelled'] as const).default('failed'))
    .action(action(async (ctx, jobId: string, opts: { state: 'failed' | 'cancelled' }) => {
      const r = await ctx.client.retryJob(jobId, { state: opts.state });
      ctx.out(ctx.json ? JSON.stringify(r) : `${jobId}: requeued ${r.requeued} ${opts.state} task${r.requeued === 1 ? '' : 's'}`);
    }));

  program
    .command('workers')
    .description('list workers, including offline and gone ones')
    .action(action(async (ctx) => {
      const workers = await ctx.client.listWorkers();
      ctx.out(ctx.json ? JSON.stringify({ workers }) : workersTable(workers));
    }));

  program
    .command('drain')
    .description('drain a worker: no new tasks; running ones finish (or are released), then it leaves')
    .argument('<worker>', 'worker id (see pullman workers)')
    .action(action(async (ctx, id: string) => {
      const w = await ctx.client.drainWorker(id);
      ctx.out(ctx.json ? JSON.stringify(w) : `${w.id} (${w.name}): ${w.state}`);
    }));

  for (const cmd of program.commands) {
    cmd.exitOverride();
    cmd.configureOutput({ outputError: (text, write) => write(`pullman: ${text.replace(/^error: /, '').trimEnd()}\n`) });
  }
  return program;
}

function contextFrom(g: GlobalOptions, env: NodeJS.ProcessEnv, cwd: string): Context {
  let url: URL;
  try {
    url = new URL(g.url);
  } catch {
    throw new CliError(`--url / PULLMAN_URL: ${JSON.stringify(g.url)} is not a URL (e.g. ${DEFAULT_URL})`, EXIT.USAGE);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new CliError(`--url / PULLMAN_URL: ${JSON.stringify(g.url)} must start with http:// or https://`, EXIT.USAGE);
  let ca: Buffer | undefined;
  if (g.caFile) {
    try {
      ca = readFileSync(g.caFile);
    } catch (err) {
      throw new CliError(`--ca-file / PULLMAN_CA_FILE: ${g.caFile} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`, EXIT.USAGE);
    }
  }
  const token = resolveToken(g.token, env, cwd);
  return {
    client: new PullmanClient({ url: g.url, token, ca }),
    json: Boolean(g.json),
    out: (text) => void process.stdout.write(`${text}\n`),
    info: (text) => void process.stderr.write(`${text}\n`),
  };
}

// ---- submit, watch, results ---------------------------------------------------------------

interface SubmitFlags {
  name?: string;
  lines?: boolean;
  wait?: boolean;
  timeout?: string;
  retries?: number;
  cwd?: string;
  job?: string;
  open?: boolean;
}

async function submit(ctx: Context, file: string, o: SubmitFlags): Promise<ExitCode> {
  const source = fileSource(file);
  const specs = () => readTaskSpecs(source, { lines: Boolean(o.lines) });
  if (o.job && (o.timeout !== undefined || o.retries !== undefined || o.cwd !== undefined || o.name !== undefined)) {
    throw new CliError('--timeout, --retries, --cwd and --name set up a new job; they cannot be used with --job', EXIT.USAGE);
  }
  // A file is checked whole before anything is created, so a typo on line 90,000 never leaves a
  // half-submitted job. stdin can be read only once: it is checked as it streams.
  if (source.name !== 'stdin') {
    let n = 0;
    for await (const _ of specs()) n++;
    if (n === 0) throw new CliError(`${source.name}: no tasks in it`, EXIT.USAGE);
  }
  const defaults: TaskDefaults = {};
  if (o.timeout !== undefined) defaults.timeout = o.timeout;
  if (o.retries !== undefined) defaults.retries = o.retries;
  if (o.cwd !== undefined) defaults.cwd = resolve(o.cwd);

  const created = o.job
    ? await ctx.client.getJob(o.job)
    : await ctx.client.createJob({ name: o.name ?? (source.name === 'stdin' ? undefined : basename(source.name)), defaults: Object.keys(defaults).length ? defaults : undefined, open: true });
  if (created.sealed) throw new CliError(`${created.id} is sealed: tasks can only be added to an open job (submit --open)`, EXIT.JOB_FAILED);

  // A bad line on stdin stops our own generator mid-upload; remember it so that the error is
  // reported as the input's fault, not as a broken connection.
  let inputError: unknown = null;
  async function* checked() {
    try {
      yield* specs();
    } catch (err) {
      inputError = err;
      throw err;
    }
  }
  let counts;
  try {
    counts = await ctx.client.streamTasks(created.id, checked());
  } catch (err) {
    if (inputError === null) throw err;
    if (!o.job) await ctx.client.cancelJob(created.id).catch(() => undefined);
    const { message } = explain(inputError, TOKEN_HINT);
    throw new CliError(`${message}${o.job ? '' : ` (job ${created.id} was cancelled)`}`, EXIT.USAGE);
  }
  if (counts.accepted + counts.duplicates === 0) {
    if (!o.job) await ctx.client.cancelJob(created.id).catch(() => undefined);
    throw new CliError(`${source.name}: no tasks in it`, EXIT.USAGE);
  }
  const job = o.open ? await ctx.client.getJob(created.id) : await ctx.client.sealJob(created.id);

  if (!o.wait) {
    if (ctx.json) ctx.out(JSON.stringify({ job, ...counts }));
    else {
      ctx.out(job.id);
      ctx.info(`submitted ${counts.accepted} task${counts.accepted === 1 ? '' : 's'} to ${job.id}${counts.duplicates ? ` (${counts.duplicates} duplicate keys ignored)` : ''}`);
    }
    return EXIT.OK;
  }
  if (!ctx.json) ctx.out(`${job.id}: submitted ${counts.accepted} tasks${counts.duplicates ? ` (${counts.duplicates} duplicate keys ignored)` : ''}`);
  if (o.open) throw new CliError(`${job.id} is open: --wait would wait for ever; seal it first (submit without --open)`, EXIT.USAGE);
  const final = await follow(ctx, job.id);
  if (ctx.json) ctx.out(JSON.stringify({ job: final, ...counts }));
  return final.state === 'succeeded' ? EXIT.OK : EXIT.JOB_FAILED;
}

async function watch(ctx: Context, id: string): Promise<ExitCode> {
  const final = await follow(ctx, id);
  if (ctx.json) ctx.out(JSON.stringify(final));
  return final.state === 'succeeded' ? EXIT.OK : EXIT.JOB_FAILED;
}

/** Polls a job to the end with a progress display (none with --json); prints the outcome. */
async function follow(ctx: Context, id: string): Promise<Job> {
  const tty = Boolean(process.stdout.isTTY);
  const progress = ctx.json ? null : createProgress({ tty });
  const started = Date.now();
  // Ctrl-C leaves the job running; give the terminal back (cursor, line) before going.
  const onSigint = () => {
    progress?.stop();
    process.stderr.write(`pullman: stopped watching; ${id} goes on (pullman job ${id} --watch)\n`);
    process.exit(130);
  };
  process.once('SIGINT', onSigint);
  try {
    const job = await ctx.client.waitForJob(id, { intervalMs: tty ? 500 : 1_000, onUpdate: (j) => progress?.update(j) });
    progress?.stop();
    if (!ctx.json) {
      const c = job.counts;
      const took = ((job.finishedAt ? Date.parse(job.finishedAt) - Date.parse(job.createdAt) : Date.now() - started) / 1000).toFixed(1);
      ctx.out(`${job.id} ${job.state}: ${c.succeeded} of ${c.total} tasks succeeded, ${c.failed} failed${c.cancelled ? `, ${c.cancelled} cancelled` : ''} (${took}s since it was created)`);
    }
    return job;
  } finally {
    progress?.stop();
    process.removeListener('SIGINT', onSigint);
  }
}

async function results(ctx: Context, jobId: string, output: string | undefined): Promise<void> {
  if (output === undefined) {
    await ctx.client.getJob(jobId); // a clear 404 before any output
    for await (const line of ctx.client.resultLines(jobId)) {
      if (!process.stdout.write(`${line}\n`)) await once(process.stdout, 'drain');
    }
    return;
  }
  await ctx.client.getJob(jobId);
  const file = createWriteStream(output);
  const opened = once(file, 'open');
  opened.catch(() => undefined);
  let n = 0;
  try {
    await opened;
    for await (const line of ctx.client.resultLines(jobId)) {
      n++;
      if (!file.write(`${line}\n`)) await once(file, 'drain');
    }
    file.end();
    await finished(file);
  } catch (err) {
    file.destroy();
    const code = (err as NodeJS.ErrnoException).code;
    if (code && !('status' in (err as object))) throw new CliError(`-o ${output}: cannot be written (${code})`, EXIT.USAGE);
    throw err;
  }
  if (ctx.json) ctx.out(JSON.stringify({ file: output, results: n }));
  else ctx.info(`wrote ${n} result${n === 1 ? '' : 's'} of ${jobId} to ${output}`);
}

// ---- argument parsers (their errors are usage errors, exit 2) ---------------------------------

function jobIdArg(value: string): string {
  if (parseJobId(value) === null) throw new InvalidArgumentError(`${JSON.stringify(value)} is not a job id (job-N)`);
  return value;
}

function taskIdArg(value: string): string {
  if (parseTaskId(value) === null) throw new InvalidArgumentError(`${JSON.stringify(value)} is not a task id (task-N)`);
  return value;
}

function durationArg(value: string): string {
  try {
    parseDuration(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message.replace(/^duration: /, ''));
  }
  return value;
}

function intArg(min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\d+$/.test(value.trim()) || n < min || n > max) throw new InvalidArgumentError(`must be an integer from ${min} to ${max}`);
    return n;
  };
}
