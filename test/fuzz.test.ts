/**
 * Property-based fuzzing (fast-check) of a real manager process: HTTP bodies, query strings,
 * path parameters, NDJSON uploads and worker-channel messages. Random, malformed, oversized
 * and wrongly typed values, unknown fields, unicode, deep nesting. The properties: never a
 * 5xx, every error in the shape {"error":{"code","message"}}, and the process stays up.
 * Runs are bounded (and seeded from the clock: a failure prints its seed for replay).
 */
import fc from 'fast-check';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { checkInvariants } from './invariants.js';
import { RawWorker } from './support/raw-worker.js';
import { killAllProcs, startManager, type Manager } from './support/procs.js';

let m: Manager;
beforeAll(async () => {
  m = await startManager({ leaseTtl: '30s' });
});
afterAll(killAllProcs);

const RUNS = 120;

/** Any JSON-ish value, deep and unicode-heavy, plus values JSON cannot express the same way. */
const deep = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constant(null),
    fc.boolean(),
    fc.integer(),
    fc.double(),
    fc.string({ unit: 'grapheme' }),
    fc.string({ unit: 'binary', maxLength: 50 }),
    fc.array(tie('value'), { maxLength: 5 }),
    fc.dictionary(fc.string({ unit: 'grapheme', maxLength: 10 }), tie('value'), { maxKeys: 5 }),
  ),
})).value;

/** Nesting a thousand levels deep, to look for stack trouble in validation. */
const nested = fc.integer({ min: 100, max: 5000 }).map((n) => `${'['.repeat(n)}${']'.repeat(n)}`);

const TASK_FIELDS = ['key', 'command', 'shell', 'env', 'cwd', 'timeout', 'retries', 'priority', 'slots', 'requires', 'meta', 'unknownField', '__proto__', 'constructor'];
/** Objects shaped like TaskSpecs, with every field possibly of the wrong type. */
const taskish = fc.dictionary(fc.constantFrom(...TASK_FIELDS), deep, { maxKeys: 6 });
const jobish = fc.record(
  { name: deep, defaults: fc.oneof(taskish, deep), tasks: fc.oneof(fc.array(fc.oneof(taskish, deep), { maxLength: 5 }), deep), open: deep, extra: deep },
  { requiredKeys: [] },
);

interface Answer {
  status: number;
  text: string;
}

async function send(method: string, path: string, body?: string, contentType = 'application/json', token = m.adminToken): Promise<Answer> {
  const res = await fetch(`${m.url}${path}`, { method, headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': contentType }) }, body });
  return { status: res.status, text: await res.text() };
}

/** Statuses seen per test, to check the fuzzing reached the validators and the handlers. */
let seen = new Map<number, number>();

/** The property every answer must have. */
function wellFormed(a: Answer, what: string): void {
  seen.set(a.status, (seen.get(a.status) ?? 0) + 1);
  expect(a.status, `${what}: ${a.text.slice(0, 300)}`).toBeLessThan(500);
  if (a.status >= 400) {
    const body = JSON.parse(a.text) as { error?: { code?: unknown; message?: unknown } };
    expect(Object.keys(body)).toEqual(['error']);
    expect(typeof body.error?.code).toBe('string');
    expect(body.error!.code).toMatch(/^[A-Z][A-Z_]*$/);
    expect(typeof body.error?.message).toBe('string');
  }
}

const enc = encodeURIComponent;

describe('fuzzing the HTTP API', () => {
  beforeEach(() => {
    seen = new Map();
  });
  it('POST /v1/jobs with random, wrongly typed and unknown-field bodies', async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(jobish, deep), async (body) => {
        const a = await send('POST', '/v1/jobs', JSON.stringify(body) ?? 'null');
        wellFormed(a, 'POST /v1/jobs');
      }),
      { numRuns: RUNS },
    );
    expect(seen.get(400)).toBeGreaterThan(RUNS / 2);
  });

  it('malformed JSON, deep nesting and binary garbage as bodies, on every write route', async () => {
    const job = await m.api.createJob({ open: true });
    const raw = fc.oneof(fc.string({ unit: 'binary', maxLength: 200 }), nested, fc.string({ maxLength: 200 }).map((s) => `{"tasks":[${s}`), fc.constantFrom('{', '[', '"', '{"__proto__":{"x":1}}', '{"tasks":[{"shell":"true","__proto__":{"slots":99}}]}', '\u0000', '1e999999', '-0'));
    const routes = ['/v1/jobs', `/v1/jobs/${job.id}/tasks`, `/v1/jobs/${job.id}/retry`, `/v1/jobs/${job.id}/seal`, '/v1/tasks/task-1/cancel'];
    await fc.assert(
      fc.asyncProperty(raw, fc.constantFrom(...routes), fc.constantFrom('application/json', 'application/x-ndjson', 'text/plain', 'application/octet-stream'), async (body, route, type) => {
        wellFormed(await send('POST', route, body, type), `POST ${route} (${type})`);
      }),
      { numRuns: RUNS },
    );
    expect(seen.get(400)).toBeGreaterThan(0);
    expect(seen.get(415)).toBeGreaterThan(0);
  });

  it('NDJSON uploads of random lines', async () => {
    const job = await m.api.createJob({ open: true });
    const line = fc.oneof(taskish.map((t) => JSON.stringify(t)), deep.map((v) => JSON.stringify(v) ?? ''), fc.string({ unit: 'grapheme', maxLength: 100 }));
    await fc.assert(
      fc.asyncProperty(fc.array(line, { maxLength: 8 }), async (lines) => {
        wellFormed(await send('POST', `/v1/jobs/${job.id}/tasks`, lines.join('\n'), 'application/x-ndjson'), 'NDJSON upload');
      }),
      { numRuns: RUNS },
    );
    expect(seen.get(400)).toBeGreaterThan(0);
    expect(seen.get(200)).toBeGreaterThan(0); // empty and blank uploads are accepted (0 tasks)
  });

  it('query strings and path parameters of any shape', async () => {
    const job = await m.api.createJob({ tasks: [{ shell: 'true' }] });
    const str = fc.oneof(fc.string({ unit: 'grapheme', maxLength: 40 }), fc.string({ unit: 'binary', maxLength: 40 }), fc.integer().map(String), fc.constantFrom('', '-1', '0', '1e3', 'NaN', '99999999999999999999', 'queued', 'c0', 'cZZZ', 'job-1', 'task-0', '../..', '%00'));
    const query = fc.dictionary(fc.oneof(fc.constantFrom('state', 'limit', 'cursor', 'x'), fc.string({ maxLength: 8 })), fc.oneof(str, fc.array(str, { maxLength: 3 })), { maxKeys: 4 });
    const paths = (id: string) => [`/v1/jobs`, `/v1/jobs/${id}`, `/v1/jobs/${id}/tasks`, `/v1/jobs/${id}/results`, `/v1/tasks/${id}`, `/v1/workers/${id}`, `/v1/jobs/${job.id}/tasks`];
    await fc.assert(
      fc.asyncProperty(str, query, fc.nat(6), async (id, q, which) => {
        const params = new URLSearchParams();
        for (const [k, v] of Object.entries(q)) for (const x of [v].flat()) params.append(k, x);
        const path = paths(enc(id) || 'x')[which]!;
        wellFormed(await send('GET', `${path}?${params.toString()}`), `GET ${path}?${params.toString()}`);
      }),
      { numRuns: RUNS },
    );
    expect(seen.get(400)).toBeGreaterThan(0);
    expect(seen.get(404)).toBeGreaterThan(0);
  });

  it('the manager is still up and its database intact', async () => {
    expect(m.proc.exitCode).toBeNull();
    expect((await fetch(`${m.url}/healthz`)).status).toBe(200);
    expect(checkInvariants(m.dbPath, { leaseTtlMs: 30_000, allTerminal: false }).violations).toEqual([]);
  });
});

describe('fuzzing the worker channel', () => {
  const TYPES = ['hello', 'pull', 'heartbeat', 'result', 'release', 'draining', 'bye', 'welcome', 'nonsense'];
  const FIELDS = ['protocol', 'workerId', 'name', 'hostname', 'slots', 'labels', 'version', 'vm', 'running', 'credits', 'taskId', 'leaseId', 'report', 'reason', 'extra'];
  const messageish = fc.oneof(
    fc.record({ type: fc.constantFrom(...TYPES) }).chain((base) => fc.dictionary(fc.constantFrom(...FIELDS), deep, { maxKeys: 6 }).map((rest) => ({ ...rest, ...base }))),
    deep,
  );
  const frame = fc.oneof(messageish.map((x) => JSON.stringify(x) ?? 'null'), fc.string({ unit: 'binary', maxLength: 100 }), nested);

  it('random frames, first on a fresh session and after a valid hello: a protocol error or silence, never a crash', async () => {
    const closes = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(fc.boolean(), fc.array(frame, { minLength: 1, maxLength: 4 }), async (helloFirst, frames) => {
        const w = await RawWorker.connect(m.url, m.workerToken);
        try {
          if (helloFirst) await w.hello('fuzz');
          for (const f of frames) if (!w.closed) w.send(f);
          // A ping round trip: the manager read every frame before answering it.
          await new Promise<void>((resolve) => {
            if (w.closed) return resolve();
            w.ws.once('pong', () => resolve());
            w.ws.once('close', () => resolve());
            w.ws.ping();
          });
          for (const msg of w.messages.filter((x) => x.type === 'error')) {
            expect(msg.code).toMatch(/^[A-Z][A-Z_]*$/);
            expect(typeof msg.message).toBe('string');
            expect(msg.code).not.toBe('INTERNAL');
          }
          if (w.closed) {
            expect([1000, 4400, 1009]).toContain(w.closed.code);
            closes.set(w.closed.code, (closes.get(w.closed.code) ?? 0) + 1);
          }
        } finally {
          w.close();
        }
      }),
      { numRuns: RUNS },
    );
    expect(closes.get(4400)).toBeGreaterThan(RUNS / 4); // most garbage reached the validator
    expect(m.proc.exitCode).toBeNull();
    expect((await fetch(`${m.url}/healthz`)).status).toBe(200);
    const internal = m.logs.filter((l) => (l.level as number) >= 50);
    expect(internal.map((l) => l.msg)).toEqual([]);
    expect(checkInvariants(m.dbPath, { leaseTtlMs: 30_000, allTerminal: false }).violations).toEqual([]);
  });
});
