/**
 * `npm run bench [-- options]`: the Pullman benchmark suite (issue 8, docs/benchmarks.md).
 *
 *   --smoke            tiny sizes, one repetition, a few seconds; CI runs this (test/bench-smoke.test.ts)
 *   --reps N           repetitions of every variant (default 3; medians are reported)
 *   --only a,b         run only these measurements (dispatch, latency, submit, connections, local, memory, durability)
 *   --out FILE         where to write the result JSON (default bench/results/<date>.json)
 *   --profile          run the manager with --cpu-prof; profiles land in bench/profiles/<date>/
 *   --vs bullmq        also run BullMQ 6.7 on Debian's redis-server, same shapes (installs them on first use)
 *
 * Every variant runs in a fresh child process (`--child NAME --params JSON`, internal), one after
 * the other, variants and their references interleaved within each repetition. Ratios are the
 * median of per-repetition ratios, so slow drift of this shared machine cancels out.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { execFileSync } from 'node:child_process';
import { ROOT, median } from './lib.js';
import { VARIANTS, VS_DIR, type Figures, type Params } from './variants.js';

// ---- child mode ------------------------------------------------------------------------------------

const RESULT_PREFIX = 'BENCH_RESULT ';

async function child(name: string, params: Params): Promise<void> {
  const fn = VARIANTS[name];
  if (!fn) throw new Error(`unknown variant ${name}`);
  const figures = await fn(params);
  process.stdout.write(`${RESULT_PREFIX}${JSON.stringify(figures)}\n`);
}

// ---- plan ------------------------------------------------------------------------------------------

interface Variant {
  /** Unique within the run, e.g. dispatch-64x1. */
  id: string;
  fn: keyof typeof VARIANTS;
  params: Params;
}

interface Row {
  measurement: string;
  figure: string;
  value: number;
  unit: string;
  reference: string;
  referenceValue: number | null;
  referenceUnit: string;
  ratio: number | null;
  target: string;
  met: boolean | null;
}

interface Measurement {
  id: string;
  title: string;
  variants: Variant[];
  rows(r: Results): Row[];
}

/** Figures of one variant, one entry per repetition. */
type Results = {
  get(id: string, key: string): number;
  /** Median over repetitions of a/b, pairing the figures of the same repetition. */
  ratio(a: [string, string], b: [string, string]): number;
};

const PEER_BEST_DISPATCH = 24_700; // graphile-worker 0.17, 4 x 16, batching on (issue 8, same machine, earlier)
const PEER_BULLMQ_LATENCY = { p50: 1.3, p99: 5.4 };

/**
 * What this machine allows, measured in the same run:
 * - the wire floor: the protocol from memory, no database (bench/wire-floor.mjs);
 * - the wire + SQLite floor: the same plus the raw floor's claim and complete statements, one
 *   transaction per turn, one event loop: a minimal manager without Pullman's bookkeeping;
 * - the same with the statements on a worker thread: what moving SQLite off the event loop gives
 *   the minimal manager (on this machine it loses: the answer that settled "should the manager's
 *   store move to a thread?");
 * - derived from the wire floor, the whole machine's limit with a free database:
 *   cores / (simulated workers + wire) CPU per task, since the simulated workers share the cores;
 * - the same with the cheapest SQLite: the raw floor's CPU per task when each transaction
 *   completes and claims a whole turn of the shape (64 at 64 x 1, 128 at 8 x 16: no turn can hold
 *   more, since no more tasks are in flight), added to the wire and the simulated workers. No
 *   manager that stores its tasks in SQLite can beat it on this machine, whatever its threading;
 *   and one event loop cannot beat 1 / (wire + that SQLite);
 * - derived from Pullman's own run, its ceiling if its work and the simulated workers' overlapped
 *   perfectly on every core (SQLite on threads of its own, say): cores / (manager + simulated
 *   workers) CPU per task. A target above it needs less CPU per task, not more threads.
 * (The sum uses the floor at a full turn, not the 16-per-transaction reference floor: a turn of
 * 8 x 16 settles and claims 128 at about half the cost per task.)
 */
function dispatchBounds(r: Results, shape: '64x1' | '8x16'): Row[] {
  const perTask = (id: string, key: string) => r.get(id, key) / 100_000; // CPU-s per task
  const wire = perTask(`wire-${shape}`, 'managerCpuSecPer100k');
  const client = perTask(`wire-${shape}`, 'clientCpuSecPer100k');
  const target = 2 * PEER_BEST_DISPATCH;
  const us = (x: number) => `${(x * 1e6).toFixed(1)} µs`;
  const label = shape.replace('x', ' × ');
  const freeDb = cpus().length / (client + wire);
  const manager = perTask(`dispatch-${shape}`, 'managerCpuSecPer100k');
  const workers = perTask(`dispatch-${shape}`, 'clientCpuSecPer100k');
  const overlapped = cpus().length / (manager + workers);
  const sql = perTask(`sqlite-turns-${shape}`, 'cpuSecPer100k');
  const cheapest = cpus().length / (client + wire + sql);
  const oneLoop = 1 / (wire + sql);
  const turn = shape === '64x1' ? 64 : 128;
  return [{
    measurement: '1. dispatch', figure: `wire floor, ${label}: the protocol from memory, no database (server ${us(wire)}, simulated workers ${us(client)} CPU per task)`,
    value: r.get(`wire-${shape}`, 'tasksPerSec'), unit: 'tasks/s',
    reference: 'Pullman, same shape', referenceValue: r.get(`dispatch-${shape}`, 'tasksPerSec'), referenceUnit: 'tasks/s',
    ratio: r.ratio([`dispatch-${shape}`, 'tasksPerSec'], [`wire-${shape}`, 'tasksPerSec']), target: '—', met: null,
  }, {
    measurement: '1. dispatch', figure: `wire + SQLite floor, ${label}: a minimal manager, one event loop, the raw floor's claim (per session) and complete per turn (server ${us(perTask(`wire-sqlite-${shape}`, 'managerCpuSecPer100k'))} CPU per task)`,
    value: r.get(`wire-sqlite-${shape}`, 'tasksPerSec'), unit: 'tasks/s',
    reference: 'Pullman, same shape', referenceValue: r.get(`dispatch-${shape}`, 'tasksPerSec'), referenceUnit: 'tasks/s',
    ratio: r.ratio([`dispatch-${shape}`, 'tasksPerSec'], [`wire-sqlite-${shape}`, 'tasksPerSec']), target: '—', met: null,
  }, {
    measurement: '1. dispatch', figure: `wire + SQLite floor on a thread, ${label}: the same statements on a worker thread, the sockets on the event loop (server ${us(perTask(`wire-sqlite-thread-${shape}`, 'managerCpuSecPer100k'))} CPU per task)`,
    value: r.get(`wire-sqlite-thread-${shape}`, 'tasksPerSec'), unit: 'tasks/s',
    reference: 'the same on one event loop', referenceValue: r.get(`wire-sqlite-${shape}`, 'tasksPerSec'), referenceUnit: 'tasks/s',
    ratio: r.ratio([`wire-sqlite-thread-${shape}`, 'tasksPerSec'], [`wire-sqlite-${shape}`, 'tasksPerSec']), target: '— (> 1 if a thread helps)', met: null,
  }, {
    measurement: '1. dispatch', figure: `bound, ${label}: whole machine with a free database = ${cpus().length} cores / (workers ${us(client)} + wire ${us(wire)})`,
    value: freeDb, unit: 'tasks/s',
    reference: '2 × best peer (the target)', referenceValue: target, referenceUnit: 'tasks/s', ratio: freeDb / target, target: '≥ 1 if reachable', met: null,
  }, {
    measurement: '1. dispatch', figure: `bound, ${label}: whole machine with the cheapest SQLite = ${cpus().length} cores / (workers ${us(client)} + wire ${us(wire)} + raw SQLite at ${turn}/tx ${us(sql)})`,
    value: cheapest, unit: 'tasks/s',
    reference: '2 × best peer (the target)', referenceValue: target, referenceUnit: 'tasks/s', ratio: cheapest / target, target: '≥ 1 if reachable', met: null,
  }, {
    measurement: '1. dispatch', figure: `bound, ${label}: one event loop with the cheapest SQLite = 1 / (wire ${us(wire)} + raw SQLite at ${turn}/tx ${us(sql)})`,
    value: oneLoop, unit: 'tasks/s',
    reference: '2 × best peer (the target)', referenceValue: target, referenceUnit: 'tasks/s', ratio: oneLoop / target, target: '≥ 1 if one event loop can reach it', met: null,
  }, {
    measurement: '1. dispatch', figure: `Pullman's ceiling, ${label}: its work and the workers' perfectly overlapped = ${cpus().length} cores / (manager ${us(manager)} + workers ${us(workers)})`,
    value: overlapped, unit: 'tasks/s',
    reference: '2 × best peer (the target)', referenceValue: target, referenceUnit: 'tasks/s', ratio: overlapped / target, target: '≥ 1 if more threads could reach it', met: null,
  }];
}

function plan(smoke: boolean, vs: string | null): Measurement[] {
  const S = <T>(full: T, small: T): T => (smoke ? small : full);
  const dispatchTasks = S(50_000, 500);
  const d = (id: string, workers: number, slots: number, dbSync: 'normal' | 'full' = 'normal'): Variant => ({ id, fn: 'dispatch', params: { workers, slots, tasks: dispatchTasks, dbSync } });
  const floor: Variant = { id: 'sqlite-floor', fn: 'sqlite-floor', params: { tasks: dispatchTasks, batch: 16 } };
  const w = (id: string, workers: number, slots: number, target: 'wire' | 'wire-sqlite' | 'wire-sqlite-thread' = 'wire'): Variant => ({ id, fn: 'dispatch', params: { workers, slots, tasks: dispatchTasks, target } });
  return [
    {
      id: 'dispatch',
      title: '1. Dispatch throughput',
      variants: [
        d('dispatch-64x1', 64, 1), floor, d('dispatch-8x16', 8, 16),
        { id: 'dispatch-8x16-backlog', fn: 'dispatch', params: { workers: 8, slots: 16, tasks: dispatchTasks, backlog: S(100_000, 1_000) } },
        w('wire-64x1', 64, 1), w('wire-8x16', 8, 16),
        w('wire-sqlite-64x1', 64, 1, 'wire-sqlite'), w('wire-sqlite-8x16', 8, 16, 'wire-sqlite'),
        w('wire-sqlite-thread-64x1', 64, 1, 'wire-sqlite-thread'), w('wire-sqlite-thread-8x16', 8, 16, 'wire-sqlite-thread'),
        { id: 'sqlite-turns-64x1', fn: 'sqlite-floor', params: { tasks: dispatchTasks, batch: 64, turns: true } },
        { id: 'sqlite-turns-8x16', fn: 'sqlite-floor', params: { tasks: dispatchTasks, batch: 128, turns: true } },
        ...(vs === 'bullmq'
          ? [
              { id: 'bullmq-64x1', fn: 'bullmq', params: { workers: 1, slots: 64, tasks: dispatchTasks } },
              { id: 'bullmq-8x16', fn: 'bullmq', params: { workers: 8, slots: 16, tasks: dispatchTasks } },
            ] satisfies Variant[]
          : []),
      ],
      rows: (r) => (['64x1', '8x16'] as const).map((shape): Row => {
        const v = r.get(`dispatch-${shape}`, 'tasksPerSec');
        const ratio = r.ratio([`dispatch-${shape}`, 'tasksPerSec'], ['sqlite-floor', 'tasksPerSec']);
        return {
          measurement: '1. dispatch', figure: shape === '64x1' ? '64 workers × 1 slot, end to end' : '8 workers × 16 slots, end to end', value: v, unit: 'tasks/s',
          reference: 'raw SQLite claim+complete floor, 16/tx', referenceValue: r.get('sqlite-floor', 'tasksPerSec'), referenceUnit: 'tasks/s', ratio,
          target: `≥ 0.6 × floor and ≥ ${fmt(2 * PEER_BEST_DISPATCH)}/s (2 × best peer, published)`, met: ratio >= 0.6 && v >= 2 * PEER_BEST_DISPATCH,
        };
      }).concat(vs !== 'bullmq' ? [] : (['64x1', '8x16'] as const).flatMap((shape): Row[] => {
        const v = r.get(`dispatch-${shape}`, 'tasksPerSec');
        const ratio = r.ratio([`dispatch-${shape}`, 'tasksPerSec'], [`bullmq-${shape}`, 'tasksPerSec']);
        const [w, c] = shape.split('x');
        return [{
          measurement: '1. dispatch', figure: `${shape.replace('x', ' × ')}, Pullman vs BullMQ side by side`, value: v, unit: 'tasks/s',
          reference: `BullMQ ${shape === '64x1' ? '1 Worker × concurrency 64' : `${w} Workers × concurrency ${c}`}, redis-server`, referenceValue: r.get(`bullmq-${shape}`, 'tasksPerSec'), referenceUnit: 'tasks/s',
          ratio, target: '≥ 2× BullMQ', met: ratio >= 2,
        }, {
          measurement: '1. dispatch', figure: `BullMQ CPU per 100k jobs (node + redis), ${shape}`, value: r.get(`bullmq-${shape}`, 'cpuSecPer100k'), unit: 'CPU-s',
          reference: 'Pullman manager, same shape', referenceValue: r.get(`dispatch-${shape}`, 'managerCpuSecPer100k'), referenceUnit: 'CPU-s',
          ratio: r.get(`bullmq-${shape}`, 'cpuSecPer100k') / r.get(`dispatch-${shape}`, 'managerCpuSecPer100k'), target: '—', met: null,
        }];
      })).concat([{
        measurement: '1. dispatch', figure: `8 × 16 behind a backlog of ${fmt(S(100_000, 1_000))} queued tasks no worker can take (they need a label none has; queued first, higher priority)`,
        value: r.get('dispatch-8x16-backlog', 'tasksPerSec'), unit: 'tasks/s',
        reference: '8 × 16 without it', referenceValue: r.get('dispatch-8x16', 'tasksPerSec'), referenceUnit: 'tasks/s',
        ratio: r.ratio(['dispatch-8x16-backlog', 'tasksPerSec'], ['dispatch-8x16', 'tasksPerSec']), target: '— (≈ 1: such tasks cost a claim nothing)', met: null,
      }]).concat(['64x1', '8x16'].map((shape): Row => ({
        measurement: '1. dispatch', figure: `manager CPU per 100k tasks, ${shape}`, value: r.get(`dispatch-${shape}`, 'managerCpuSecPer100k'), unit: 'CPU-s',
        reference: 'BullMQ, published', referenceValue: 9.1, referenceUnit: 'CPU-s', ratio: r.get(`dispatch-${shape}`, 'managerCpuSecPer100k') / 9.1, target: '—', met: null,
      }))).concat((['64x1', '8x16'] as const).flatMap((shape): Row[] => dispatchBounds(r, shape))),
    },
    {
      id: 'latency',
      title: '2. Idle dispatch latency',
      variants: [
        { id: 'latency-manager', fn: 'latency', params: { tasks: S(1_000, 30), warmup: S(50, 5) } },
        { id: 'latency-relay', fn: 'latency', params: { tasks: S(1_000, 30), warmup: S(50, 5), target: 'relay' } },
      ],
      rows: (r) => (['p50', 'p99'] as const).map((q) => {
        const v = r.get('latency-manager', `${q}Ms`);
        const limit = q === 'p50' ? 0.5 : 2;
        return {
          measurement: '2. latency', figure: `submit → worker has it, ${q}`, value: v, unit: 'ms',
          reference: 'bare HTTP→WebSocket relay (no DB)', referenceValue: r.get('latency-relay', `${q}Ms`), referenceUnit: 'ms',
          ratio: r.ratio(['latency-manager', `${q}Ms`], ['latency-relay', `${q}Ms`]),
          target: `< ${limit} ms (BullMQ published ${PEER_BULLMQ_LATENCY[q]} ms)`, met: v < limit,
        };
      }),
    },
    {
      id: 'submit',
      title: '3. Bulk submission',
      variants: [
        { id: 'submit', fn: 'submit', params: { tasks: S(1_000_000, 2_000) } },
        { id: 'insert-floor', fn: 'insert-floor', params: { tasks: S(1_000_000, 2_000) } },
      ],
      rows: (r) => [
        {
          measurement: '3. submission', figure: `${fmt(S(1_000_000, 2_000))} tasks, one NDJSON upload`, value: r.get('submit', 'tasksPerSec'), unit: 'tasks/s',
          reference: 'raw SQLite insert, 1,000/tx', referenceValue: r.get('insert-floor', 'tasksPerSec'), referenceUnit: 'tasks/s',
          ratio: r.ratio(['submit', 'tasksPerSec'], ['insert-floor', 'tasksPerSec']), target: '≥ 150k tasks/s', met: r.get('submit', 'tasksPerSec') >= 150_000,
        },
        {
          measurement: '3. submission', figure: 'manager peak RSS (VmHWM)', value: r.get('submit', 'peakRssMiB'), unit: 'MiB',
          reference: 'same manager idle, before the upload', referenceValue: r.get('submit', 'idleRssMiB'), referenceUnit: 'MiB',
          ratio: r.ratio(['submit', 'peakRssMiB'], ['submit', 'idleRssMiB']), target: '< 300 MiB', met: r.get('submit', 'peakRssMiB') < 300,
        },
      ],
    },
    {
      id: 'connections',
      title: '4. Worker connections',
      variants: [{ id: 'connections', fn: 'connections', params: { sessions: S(5_000, 20), windowMs: S(10_000, 1_000), settleMs: S(6_000, 300), stormLimitMs: S(120_000, 30_000) } }],
      rows: (r) => {
        const n = fmt(r.get('connections', 'sessions'));
        return [
          {
            measurement: '4. connections', figure: `manager CPU, ${n} sessions heartbeating every 5 s`, value: r.get('connections', 'cpuPercent'), unit: '% of a core',
            reference: 'one core', referenceValue: 100, referenceUnit: '%', ratio: r.get('connections', 'cpuPercent') / 100, target: '< 25%', met: r.get('connections', 'cpuPercent') < 25,
          },
          {
            measurement: '4. connections', figure: `manager RSS, ${n} sessions`, value: r.get('connections', 'rssMiB'), unit: 'MiB',
            reference: 'same manager idle, no sessions', referenceValue: r.get('connections', 'idleRssMiB'), referenceUnit: 'MiB',
            ratio: r.ratio(['connections', 'rssMiB'], ['connections', 'idleRssMiB']), target: '< 500 MiB', met: r.get('connections', 'rssMiB') < 500,
          },
          {
            measurement: '4. connections', figure: `reconnect storm after restart: all ${n} back (from listening)`, value: r.get('connections', 'reconnectSeconds'), unit: 's',
            reference: 'first connect of the same clients, waves of 250, no backoff', referenceValue: r.get('connections', 'connectSeconds'), referenceUnit: 's',
            ratio: r.ratio(['connections', 'reconnectSeconds'], ['connections', 'connectSeconds']), target: '< 30 s', met: r.get('connections', 'reconnectSeconds') < 30,
          },
        ];
      },
    },
    {
      id: 'local',
      title: '5. Local execution',
      variants: [
        { id: 'local-worker', fn: 'local', params: { tasks: S(2_000, 50) } },
        { id: 'local-worker-forking', fn: 'local', params: { tasks: S(2_000, 50), spawnHelper: 'off' } },
        { id: 'local-worker-slow-disk', fn: 'local', params: { tasks: S(2_000, 50), fsyncMs: 10 } },
        { id: 'local-xargs', fn: 'xargs', params: { tasks: S(2_000, 50) } },
        { id: 'local-node-spawn', fn: 'node-spawn', params: { tasks: S(2_000, 50) } },
        { id: 'local-fork-server', fn: 'fork-server', params: { tasks: S(2_000, 50) } },
      ],
      rows: (r) => {
        // Every rate row is read against xargs' rate in the same repetitions.
        const vsXargs = (id: string, figure: string, target: string, met: boolean | null): Row => ({
          measurement: '5. local', figure, value: r.get(id, 'tasksPerSec'), unit: 'tasks/s',
          reference: `xargs -P${r.get('local-xargs', 'slots')} -n1 true`, referenceValue: r.get('local-xargs', 'tasksPerSec'), referenceUnit: 'tasks/s',
          ratio: r.ratio([id, 'tasksPerSec'], ['local-xargs', 'tasksPerSec']), target, met,
        });
        const ratio = r.ratio(['local-worker', 'tasksPerSec'], ['local-xargs', 'tasksPerSec']);
        const cpuAll = r.get('local-worker', 'workerCpuMsPerTask') + r.get('local-worker', 'taskCpuMsPerTask') + r.get('local-worker', 'managerCpuMsPerTask');
        return [
          vsXargs('local-worker', `${fmt(S(2_000, 50))} \`true\` tasks, 1 real worker, slots = ${r.get('local-worker', 'slots')}`, '≥ 0.7 × xargs', ratio >= 0.7),
          vsXargs('local-worker-forking', 'the same worker forking its tasks itself (`PULLMAN_SPAWN_HELPER=off`)', '— (without the spawn helper)', null),
          {
            // A result is sent while it is written, and the journal's fdatasync is shared by the
            // turn's results: a slow disk should cost the rate little. A worker that waited on
            // its disk between tasks showed here as a fraction (a third, once: docs/benchmarks.md).
            measurement: '5. local', figure: 'the same worker on a disk whose fsync takes 10 ms longer (a VM\'s standard disk; `bench/slow-fsync.mjs`)',
            value: r.get('local-worker-slow-disk', 'tasksPerSec'), unit: 'tasks/s',
            reference: 'the worker on this disk', referenceValue: r.get('local-worker', 'tasksPerSec'), referenceUnit: 'tasks/s',
            ratio: r.ratio(['local-worker-slow-disk', 'tasksPerSec'], ['local-worker', 'tasksPerSec']), target: '— (≈ 1: the worker does not wait on its disk)', met: null,
          },
          vsXargs('local-node-spawn', 'bare Node.js spawn of `true` (piped, detached), same slots: the floor for a Node worker', '— (shows what is reachable)', null),
          vsXargs('local-fork-server', 'a minimal fork server (`bench/fork-server.pl`) starting `true` for a Node client, same slots, nothing else: the floor for a worker that spawns through a helper', '— (≥ 0.7 if a helper could reach the target)', null),
          {
            // The budget: xargs keeps both cores busy, so 0.7 x its rate leaves 1/0.7 of its CPU per
            // task for everything: the task, the worker and the manager together.
            measurement: '5. local', figure: `CPU per task of the local-worker run: worker and spawn helper ${r.get('local-worker', 'workerCpuMsPerTask').toFixed(2)} ms + the \`true\` they ran ${r.get('local-worker', 'taskCpuMsPerTask').toFixed(2)} ms + manager ${r.get('local-worker', 'managerCpuMsPerTask').toFixed(2)} ms`,
            value: cpuAll, unit: 'ms CPU',
            reference: 'xargs, its shell and its `true`s, per task', referenceValue: r.get('local-xargs', 'cpuMsPerTask'), referenceUnit: 'ms CPU',
            ratio: cpuAll / r.get('local-xargs', 'cpuMsPerTask'), target: '≤ 1.43 × (what 0.7 × xargs leaves)', met: cpuAll / r.get('local-xargs', 'cpuMsPerTask') <= 1 / 0.7,
          },
        ];
      },
    },
    {
      id: 'memory',
      title: '6. Memory independence',
      variants: [
        { id: 'memory-big', fn: 'memory', params: { queued: S(1_000_000, 2_000), work: S(1_000, 100) } },
        { id: 'memory-small', fn: 'memory', params: { queued: S(1_000, 20), work: S(1_000, 100) } },
      ],
      rows: (r) => {
        const diff = r.get('memory-big', 'rssMiB') - r.get('memory-small', 'rssMiB');
        return [{
          measurement: '6. memory', figure: `manager RSS with ${fmt(r.get('memory-big', 'queued'))} queued (restarted, then ${fmt(S(1_000, 100))} tasks run)`, value: r.get('memory-big', 'rssMiB'), unit: 'MiB',
          reference: `the same with ${fmt(r.get('memory-small', 'queued'))} queued`, referenceValue: r.get('memory-small', 'rssMiB'), referenceUnit: 'MiB',
          ratio: r.ratio(['memory-big', 'rssMiB'], ['memory-small', 'rssMiB']), target: `within 50 MiB (difference ${diff.toFixed(1)} MiB)`, met: Math.abs(diff) <= 50,
        }];
      },
    },
    {
      id: 'durability',
      title: '7. Durability cost',
      variants: [d('durability-full', 8, 16, 'full'), d('durability-normal', 8, 16, 'normal')],
      rows: (r) => [{
        measurement: '7. durability', figure: 'dispatch 8 × 16 with --db-sync full', value: r.get('durability-full', 'tasksPerSec'), unit: 'tasks/s',
        reference: 'the same with --db-sync normal', referenceValue: r.get('durability-normal', 'tasksPerSec'), referenceUnit: 'tasks/s',
        ratio: r.ratio(['durability-full', 'tasksPerSec'], ['durability-normal', 'tasksPerSec']), target: 'documented (no target)', met: null,
      }],
    },
  ];
}

// ---- running ---------------------------------------------------------------------------------------

/** Runs one variant in a fresh process with the hard fd limit raised to its maximum. */
function runChild(v: Variant, params: Params, timeoutMs: number): Promise<Figures> {
  return new Promise((resolve, reject) => {
    const args = [process.execPath, '--import', 'tsx', join(ROOT, 'bench/run.ts'), '--child', v.fn, '--params', JSON.stringify(params)];
    // 5,000 sessions need ~5,000 fds in the bench process and in the manager: raise the soft
    // limit to the hard one (no-op if already there).
    const proc = spawn('sh', ['-c', 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"', 'sh', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-8_000)));
    const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    proc.on('exit', (code, signal) => {
      clearTimeout(timer);
      const line = out.split('\n').find((l) => l.startsWith(RESULT_PREFIX));
      if (code === 0 && line) resolve(JSON.parse(line.slice(RESULT_PREFIX.length)) as Figures);
      else reject(new Error(`variant ${v.id} failed (${signal ? `killed ${signal}${signal === 'SIGKILL' ? `, time limit ${timeoutMs} ms` : ''}` : `exit ${code}`}):\n${err.trim() || out.trim()}`));
    });
  });
}

/**
 * `--vs bullmq` only: Debian's redis-server (apt-get, as root) and bullmq 6.7 + ioredis 6 into
 * bench/.vs (npm, outside the workspaces, never in package.json). Skipped when present.
 */
function prepareBullmq(): void {
  const run = (cmd: string, what: string) => {
    process.stderr.write(`--vs bullmq: ${what}\n`);
    execFileSync('sh', ['-c', cmd], { stdio: ['ignore', 'inherit', 'inherit'], timeout: 600_000, cwd: ROOT });
  };
  try {
    execFileSync('sh', ['-c', 'command -v redis-server'], { stdio: 'ignore' });
  } catch {
    run('apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server', 'installing redis-server (Debian)');
  }
  if (!existsSync(join(VS_DIR, 'node_modules/bullmq/package.json')) || !existsSync(join(VS_DIR, 'node_modules/ioredis/package.json'))) {
    mkdirSync(VS_DIR, { recursive: true });
    writeFileSync(join(VS_DIR, 'package.json'), '{"name":"pullman-bench-vs","private":true}\n');
    run(`cd ${JSON.stringify(VS_DIR)} && npm install --no-save --no-package-lock --no-audit --no-fund --workspaces=false bullmq@6.7.0 ioredis@6.0.0`, 'installing bullmq 6.7.0 and ioredis 6.0.0 into bench/.vs');
  }
}

function machine(): Record<string, unknown> {
  const sh = (cmd: string) => {
    try {
      return execFileSync('sh', ['-c', cmd], { encoding: 'utf8', timeout: 5_000 }).trim();
    } catch {
      return '';
    }
  };
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  return {
    nproc: Number(sh('nproc')) || cpus().length,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    cpuModel: /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? 'unknown',
    node: process.version,
    kernel: sh('uname -r'),
    fdLimit: sh('ulimit -Hn'),
    gitCommit: sh(`git -C ${JSON.stringify(ROOT)} rev-parse --short HEAD`),
  };
}

const loadavg = (): number[] => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).map(Number);

function fmt(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  const a = Math.abs(n);
  if (Number.isInteger(n) && a < 10_000) return String(n);
  if (a >= 1_000_000 && n % 1_000_000 === 0) return `${n / 1_000_000}M`;
  if (a >= 1_000_000) return `${(n / 1_000_000).toFixed(2)}M`;
  if (a >= 100_000) return `${(n / 1000).toFixed(0)}k`;
  if (a >= 10_000) return `${(n / 1000).toFixed(1)}k`;
  if (a >= 100) return n.toFixed(0);
  if (a >= 10) return n.toFixed(1);
  if (a >= 1) return n.toFixed(2);
  return n.toFixed(3);
}

export function markdownTable(rows: readonly Row[]): string {
  const lines = [
    '| measurement | figure | value | reference (same run) | reference value | ratio | target | met |',
    '|---|---|---:|---|---:|---:|---|:-:|',
  ];
  for (const r of rows) {
    const ref = r.referenceValue === null ? '—' : `${fmt(r.referenceValue)} ${r.referenceUnit}`;
    const ratio = r.ratio === null ? '—' : `${r.ratio.toFixed(r.ratio < 0.1 ? 3 : 2)}×`;
    const met = r.met === null ? '—' : r.met ? 'yes' : '**no**';
    lines.push(`| ${r.measurement} | ${r.figure} | ${fmt(r.value)} ${r.unit} | ${r.reference} | ${ref} | ${ratio} | ${r.target} | ${met} |`);
  }
  return lines.join('\n');
}

function parseArgs(argv: string[]) {
  const o = { smoke: false, reps: 0, only: null as string[] | null, out: null as string | null, profile: false, vs: null as string | null, child: null as string | null, params: '{}' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--smoke') o.smoke = true;
    else if (a === '--reps') o.reps = Number(next());
    else if (a === '--only') o.only = next().split(',');
    else if (a === '--out') o.out = next();
    else if (a === '--profile') o.profile = true;
    else if (a === '--vs') o.vs = next();
    else if (a === '--child') o.child = next();
    else if (a === '--params') o.params = next();
    else throw new Error(`unknown option ${a} (see the top of bench/run.ts)`);
  }
  if (o.reps !== 0 && !(Number.isInteger(o.reps) && o.reps >= 1 && o.reps <= 50)) throw new Error('--reps must be an integer 1-50');
  return o;
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  if (o.child) return child(o.child, JSON.parse(o.params) as Params);
  if (o.vs !== null) {
    if (o.vs !== 'bullmq') throw new Error(`--vs: only "bullmq" is supported, not ${JSON.stringify(o.vs)}`);
    prepareBullmq();
  }

  const reps = o.reps || (o.smoke ? 1 : 3);
  const stamp = new Date().toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-');
  const measurements = plan(o.smoke, o.vs).filter((m) => !o.only || o.only.includes(m.id));
  if (o.only) for (const id of o.only) if (!measurements.some((m) => m.id === id)) throw new Error(`--only: unknown measurement ${id}`);
  const profileRoot = o.profile ? join(ROOT, 'bench/profiles', stamp) : null;
  const timeoutMs = o.smoke ? 90_000 : 900_000;
  const startedAt = new Date().toISOString();
  const loadBefore = loadavg();
  const info = machine();
  process.stderr.write(`pullman bench: ${o.smoke ? 'smoke, ' : ''}${reps} repetition(s), ${measurements.map((m) => m.id).join(', ')}; load average ${loadBefore.join(' ')}\n`);

  const raw: Record<string, Figures[]> = {};
  const t0 = Date.now();
  for (let rep = 0; rep < reps; rep++) {
    for (const m of measurements) {
      for (const v of m.variants) {
        const params: Params = { ...v.params };
        if (profileRoot) {
          params.profileDir = join(profileRoot, `${v.id}-${rep + 1}`);
          mkdirSync(params.profileDir as string, { recursive: true });
        }
        const s0 = Date.now();
        const figures = await runChild(v, params, timeoutMs);
        (raw[v.id] ??= []).push(figures);
        process.stderr.write(`  rep ${rep + 1}/${reps} ${v.id}: ${Object.entries(figures).map(([k, x]) => `${k}=${typeof x === 'number' ? fmt(x) : x}`).join(' ')} (${((Date.now() - s0) / 1000).toFixed(1)} s)\n`);
      }
    }
  }

  const results: Results = {
    get(id, key) {
      const xs = (raw[id] ?? []).map((f) => f[key]).filter((x): x is number => typeof x === 'number');
      if (xs.length === 0) throw new Error(`no figure ${key} for ${id}`);
      return median(xs);
    },
    ratio([a, ak], [b, bk]) {
      const as = raw[a] ?? [];
      const bs = raw[b] ?? [];
      return median(as.map((f, i) => (f[ak] as number) / (bs[i]?.[bk] as number)));
    },
  };
  const rows = measurements.flatMap((m) => m.rows(results));
  const loadAfter = loadavg();
  const report = {
    kind: 'pullman-bench',
    version: 1,
    mode: o.smoke ? 'smoke' : 'full',
    startedAt,
    durationSeconds: (Date.now() - t0) / 1000,
    repetitions: reps,
    machine: { ...info, loadAverageBefore: loadBefore, loadAverageAfter: loadAfter },
    measurements: measurements.map((m) => ({ id: m.id, title: m.title, variants: m.variants.map((v) => ({ id: v.id, fn: v.fn, params: v.params, runs: raw[v.id] ?? [] })) })),
    rows,
    profiles: profileRoot ? relative(ROOT, profileRoot) : null,
  };
  const out = o.out ?? join(ROOT, 'bench/results', `${o.smoke ? 'smoke-' : ''}${stamp}.json`);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify(report, null, 2) + '\n');

  const m = info as { nproc: number; memoryGiB: number; cpuModel: string; node: string };
  process.stdout.write(
    `\n${markdownTable(rows)}\n\n` +
    `Machine: ${m.nproc} CPUs (${m.cpuModel}), ${m.memoryGiB} GiB, Node ${m.node}; load average ${loadBefore.join(' ')} before, ${loadAfter.join(' ')} after. ` +
    `${reps} repetition(s), medians; ratios are medians of per-repetition ratios.\n` +
    `Results: ${relative(ROOT, out)}${profileRoot ? `; CPU profiles: ${relative(ROOT, profileRoot)} (summarise with: npx tsx bench/profile.ts DIR)` : ''}\n`,
  );
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
