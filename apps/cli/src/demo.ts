/**
 * `npm run demo`: a real batch on this machine. Starts a manager (temp data dir, free port) and
 * two local workers, submits a Monte Carlo π job through @pullman/client, shows the same
 * progress display as `pullman submit --wait`, prints the estimate and a summary, shuts
 * everything down (SIGTERM, then waits for every exit) and exits 0.
 *
 *   node apps/cli/dist/demo.js [--tasks 200] [--samples 250000] [--workers 2] [--slots 2]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError } from 'commander';
import { PullmanClient } from '@pullman/client';
import type { TaskSpec } from '@pullman/protocol';
import { createProgress } from './progress.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const MANAGER_JS = join(root, 'apps/manager/dist/server.js');
const WORKER_JS = join(root, 'apps/worker/dist/main.js');
const PI_JS = join(root, 'examples/montecarlo/pi.mjs');

/** How long a child may take to stop after SIGTERM before it is killed. */
const STOP_GRACE_MS = 15_000;

interface Child {
  name: string;
  proc: ChildProcess;
  /** Everything it printed, for the post-mortem when something fails. */
  output: string[];
  exited: Promise<number | null>;
}

const children: Child[] = [];

function start(name: string, args: string[], env: NodeJS.ProcessEnv, onLine?: (line: string) => void): Child {
  const proc = spawn(process.execPath, args, { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const output: string[] = [];
  for (const stream of [proc.stdout!, proc.stderr!]) {
    createInterface({ input: stream }).on('line', (line) => {
      output.push(line);
      if (output.length > 200) output.shift();
      onLine?.(line);
    });
  }
  const exited = once(proc, 'exit').then(([code]) => code as number | null);
  const child = { name, proc, output, exited };
  children.push(child);
  return child;
}

/** SIGTERM every child (workers first, so they can say goodbye), then wait for each exit. */
async function stopAll(): Promise<void> {
  for (const group of [children.filter((c) => c.name !== 'manager'), children.filter((c) => c.name === 'manager')]) {
    await Promise.all(
      group.map(async (c) => {
        if (c.proc.exitCode !== null || c.proc.signalCode !== null) return;
        c.proc.kill('SIGTERM');
        const timer = setTimeout(() => c.proc.kill('SIGKILL'), STOP_GRACE_MS);
        await c.exited;
        clearTimeout(timer);
      }),
    );
  }
}

const positiveInt = (max: number) => (value: string): number => {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || n > max) throw new InvalidArgumentError(`must be an integer from 1 to ${max}`);
  return n;
};

async function main(): Promise<number> {
  const opts = new Command('pullman-demo')
    .description('Run a Monte Carlo π batch on a local manager and two workers')
    .option('--tasks <n>', 'tasks in the job', positiveInt(100_000), 200)
    .option('--samples <n>', 'random points per task', positiveInt(100_000_000), 250_000)
    .option('--workers <n>', 'local worker processes', positiveInt(16), 2)
    .option('--slots <n>', 'slots per worker', positiveInt(64), 2)
    .parse()
    .opts<{ tasks: number; samples: number; workers: number; slots: number }>();

  const dir = mkdtempSync(join(tmpdir(), 'pullman-demo-'));
  const say = (text: string) => void process.stdout.write(`${text}\n`);
  try {
    // 1. The manager: port 0, and the URL read from its one plain stdout line.
    let gotUrl!: (url: string) => void;
    const urlSeen = new Promise<string>((resolve) => (gotUrl = resolve));
    const manager = start('manager', [MANAGER_JS, '--port', '0', '--data-dir', join(dir, 'manager')], { PULLMAN_LOG_LEVEL: 'warn' }, (line) => {
      const m = /^listening on (https?:\/\/\S+)$/.exec(line);
      if (m) gotUrl(m[1]!);
    });
    const url = await Promise.race([
      urlSeen,
      manager.exited.then((code) => Promise.reject(new Error(`the manager exited (${code}) before listening:\n${manager.output.join('\n')}`))),
    ]);
    const tokenFile = (role: string) => join(dir, 'manager', `${role}.token`);
    say(`manager   ${url}  (data in ${join(dir, 'manager')})`);

    // 2. The workers: local processes, no readiness gate, the worker token from the data dir.
    for (let i = 1; i <= opts.workers; i++) {
      start(`worker-${i}`, [WORKER_JS, 'run'], {
        PULLMAN_MANAGER_URL: url,
        PULLMAN_WORKER_TOKEN_FILE: tokenFile('worker'),
        PULLMAN_READY: 'none',
        PULLMAN_NAME: `demo-worker-${i}`,
        PULLMAN_SLOTS: String(opts.slots),
        PULLMAN_WORK_DIR: join(dir, `worker-${i}`),
        PULLMAN_LOG_LEVEL: 'warn',
      });
    }
    say(`workers   ${opts.workers} × ${opts.slots} slots (demo-worker-1..${opts.workers})`);

    // 3. The job, streamed as NDJSON through the real client.
    const client = new PullmanClient({ url, token: readFileSync(tokenFile('admin'), 'utf8').trim() });
    function* tasks(): Generator<TaskSpec> {
      for (let i = 1; i <= opts.tasks; i++) {
        yield { key: `pi-${i}`, command: [process.execPath, PI_JS, String(opts.samples), String(i)], timeout: '2m', retries: 1 };
      }
    }
    const started = Date.now();
    const { job } = await client.submit(tasks(), { name: 'monte-carlo-pi' });
    say(`job       ${job.id}: ${job.counts.total} tasks × ${opts.samples.toLocaleString('en-US')} samples (node ${PI_JS.slice(root.length)})`);
    say('');

    const tty = Boolean(process.stdout.isTTY);
    const progress = createProgress({ tty, intervalMs: 2_000 });
    let final;
    try {
      final = await client.waitForJob(job.id, { intervalMs: tty ? 250 : 500, onUpdate: (j) => progress.update(j) });
    } finally {
      progress.stop();
    }
    const wallMs = Date.now() - started;

    // 4. The estimate: every task's {inside,total}, streamed back.
    let inside = 0;
    let total = 0;
    for await (const r of client.results(job.id)) {
      const out = r.output as { inside?: unknown; total?: unknown } | null;
      if (r.state === 'succeeded' && typeof out?.inside === 'number' && typeof out.total === 'number') {
        inside += out.inside;
        total += out.total;
      }
    }
    const c = final.counts;
    say('');
    if (total > 0) {
      const pi = (4 * inside) / total;
      say(`π ≈ ${pi.toFixed(6)}  (error ${Math.abs(pi - Math.PI).toExponential(1)}, from ${total.toLocaleString('en-US')} samples)`);
    }
    say(`tasks     ${c.total} (${c.succeeded} succeeded, ${c.failed} failed${c.cancelled ? `, ${c.cancelled} cancelled` : ''})`);
    say(`wall time ${(wallMs / 1000).toFixed(1)}s`);
    say(`rate      ${((c.total * 1000) / wallMs).toFixed(1)} tasks/s`);

    const workers = await client.listWorkers();
    say(`by worker ${workers.map((w) => `${w.name}: ${w.tasksSucceeded}`).join(', ')}`);
    say('');
    say('next: docs/quickstart.md runs the same batch by hand with the pullman CLI');

    if (final.state !== 'succeeded' || total === 0) {
      process.stderr.write(`pullman demo: job ${job.id} ended ${final.state}; see the failed tasks with: pullman task <id>\n`);
      return 1;
    }
    return 0;
  } catch (err) {
    process.stderr.write(`pullman demo: ${(err as Error).message}\n`);
    for (const c of children) if (c.output.length) process.stderr.write(`--- ${c.name} (last lines) ---\n${c.output.slice(-20).join('\n')}\n`);
    return 1;
  } finally {
    process.stdout.write('stopping the workers and the manager... ');
    await stopAll();
    process.stdout.write('done\n');
    rmSync(dir, { recursive: true, force: true });
  }
}

// Ctrl-C: let `finally` shut the children down instead of orphaning them.
process.once('SIGINT', () => {
  process.stderr.write('\npullman demo: interrupted\n');
  void stopAll().then(() => process.exit(130));
});

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`pullman demo: ${(err as Error)?.message ?? String(err)}\n`);
    process.exit(1);
  },
);
