/**
 * Security: every route's auth, lease ownership between sessions, tokens out of logs, TLS end
 * to end, size limits, and the limit on failed authentication (HTTP and WebSocket upgrades).
 */
import { execFileSync } from 'node:child_process';
import { request as httpsRequest } from 'node:https';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import Fastify, { type FastifyInstance, type RouteOptions } from 'fastify';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { MAX_MESSAGE_BYTES } from '@pullman/protocol';
import { app as pullmanApp, serverOptions } from '@pullman/manager';
import { TaskStore } from '@pullman/store';
import { until } from './harness.js';
import { checkInvariants } from './invariants.js';
import { RawWorker } from './support/raw-worker.js';
import { allOutput, killAllProcs, startManager, startWorker } from './support/procs.js';

const ADMIN = 'admin-token-security-0123456789';
const WORKER = 'worker-token-security-0123456789';
const WRONG = 'wrong-token-security-0123456789';

interface InProcess {
  app: FastifyInstance;
  routes: Array<{ method: string; url: string }>;
  logs: Array<Record<string, unknown>>;
  url: string;
  close(): Promise<void>;
}

const open: InProcess[] = [];
afterEach(async () => {
  for (const m of open.splice(0)) await m.close();
  await killAllProcs();
});

/** The real app plugin on a fresh database, with every registered route collected. */
async function inProcess(opts: { authLimit?: { maxFailures: number; windowMs: number }; leaseTtlMs?: number; listen?: boolean } = {}): Promise<InProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'pullman-sec-'));
  const logs: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line) logs.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  const leaseTtlMs = opts.leaseTtlMs ?? 30_000;
  const store = new TaskStore({ path: join(dir, 'pullman.db'), leaseTtlMs });
  const app = Fastify(serverOptions(pino({ level: 'trace' }, sink)));
  const routes: Array<{ method: string; url: string }> = [];
  app.addHook('onRoute', (r: RouteOptions) => {
    for (const method of [r.method].flat()) routes.push({ method, url: r.url });
  });
  await app.register(pullmanApp, { store, tokens: { admin: ADMIN, worker: WORKER }, heartbeatIntervalMs: Math.floor(leaseTtlMs / 4), leaseTtlMs, ...(opts.authLimit ? { authLimit: opts.authLimit } : {}) });
  await app.ready();
  const url = opts.listen ? await app.listen({ host: '127.0.0.1', port: 0 }) : '';
  const m: InProcess = {
    app,
    routes,
    logs,
    url,
    async close() {
      await app.close();
      store.close();
    },
  };
  open.push(m);
  return m;
}

/** Routes that need no token, on purpose. Anything else must answer 401 without one. */
const PUBLIC_ROUTES: Array<{ url: string | RegExp; why: string }> = [
  { url: '/healthz', why: 'liveness probe' },
  { url: '/metrics', why: 'Prometheus scrape' },
  { url: /^\/docs(\/|$)/, why: 'OpenAPI document and UI' },
  { url: '/', why: 'dashboard page (its data comes from /v1 with the token)' },
  { url: '/dashboard/:file', why: 'dashboard static files' },
];
const isPublic = (url: string) => PUBLIC_ROUTES.some((p) => (typeof p.url === 'string' ? p.url === url : p.url.test(url)));
const concrete = (url: string) => url.replace(/:[A-Za-z_]+/g, 'x-1').replace(/\*/g, 'x');

describe('route auth', () => {
  it('every registered /v1 route answers 401 without a token, 401 with a wrong one, and 403 with the other role', async () => {
    const m = await inProcess({ authLimit: { maxFailures: 1_000_000, windowMs: 60_000 } });
    const v1 = m.routes.filter((r) => r.url.startsWith('/v1'));
    expect(v1.length).toBeGreaterThan(15);
    for (const r of m.routes) if (!r.url.startsWith('/v1')) expect(isPublic(r.url), `${r.method} ${r.url} is outside /v1 but not on the public allow-list`).toBe(true);
    const checked: string[] = [];
    for (const r of v1) {
      const url = concrete(r.url);
      const method = r.method as 'GET' | 'HEAD' | 'POST';
      const isWorkerRoute = r.url === '/v1/worker' || r.url.startsWith('/v1/worker/');
      const none = await m.app.inject({ method, url });
      expect(none.statusCode, `${r.method} ${r.url} without a token`).toBe(401);
      const wrong = await m.app.inject({ method, url, headers: { authorization: `Bearer ${WRONG}` } });
      expect(wrong.statusCode, `${r.method} ${r.url} with a wrong token`).toBe(401);
      const otherRole = await m.app.inject({ method, url, headers: { authorization: `Bearer ${isWorkerRoute ? ADMIN : WORKER}` } });
      expect(otherRole.statusCode, `${r.method} ${r.url} with the ${isWorkerRoute ? 'admin' : 'worker'} token`).toBe(403);
      if (method !== 'HEAD') {
        for (const res of [none, wrong, otherRole]) expect(res.json()).toMatchObject({ error: { code: expect.any(String), message: expect.any(String) } });
      }
      checked.push(`${r.method} ${r.url}`);
    }
    expect(checked).toEqual(expect.arrayContaining(['POST /v1/jobs', 'GET /v1/jobs/:id', 'GET /v1/worker', 'POST /v1/workers/:id/drain', 'POST /v1/tasks/:id/cancel']));
  });

  it('the public routes answer without a token', async () => {
    const m = await inProcess();
    for (const url of ['/healthz', '/metrics', '/docs/json']) expect((await m.app.inject({ url })).statusCode, url).toBe(200);
  });
});

describe('failed authentication is limited per address and logged once', () => {
  it('HTTP: past the limit an address gets 429 with Retry-After, even with a valid token; other addresses are unaffected; one log line', async () => {
    const m = await inProcess({ authLimit: { maxFailures: 5, windowMs: 60_000 } });
    const from = (remoteAddress: string, token?: string) => m.app.inject({ url: '/v1/jobs', remoteAddress, headers: token ? { authorization: `Bearer ${token}` } : {} });
    for (let i = 0; i < 5; i++) expect((await from('10.0.0.1', `${WRONG}${i}`)).statusCode).toBe(401);
    const limited = await from('10.0.0.1', WRONG);
    expect(limited.statusCode).toBe(429);
    expect(limited.json().error.code).toBe('RATE_LIMITED');
    expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
    expect((await from('10.0.0.1', ADMIN)).statusCode).toBe(429); // a right guess is not revealed
    expect((await from('10.0.0.2', ADMIN)).statusCode).toBe(200);
    expect((await from('10.0.0.2')).statusCode).toBe(401);
    for (let i = 0; i < 20; i++) await from('10.0.0.1', WRONG);
    const authLines = m.logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('authentication failed'));
    expect(authLines.map((l) => l.ip)).toEqual(['10.0.0.1', '10.0.0.2']);
    // No per-attempt "request rejected" line for auth failures, and no token in any line.
    expect(m.logs.filter((l) => l.code === 'UNAUTHORIZED' && l.msg !== authLines[0]!.msg)).toEqual([]);
    const text = JSON.stringify(m.logs);
    for (const t of [ADMIN, WORKER, WRONG]) expect(text.includes(t)).toBe(false);
  });

  it('WebSocket upgrades: failed upgrades count too, then the address gets 429', async () => {
    const m = await inProcess({ authLimit: { maxFailures: 3, windowMs: 60_000 }, listen: true });
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) {
      const err = await RawWorker.connect(m.url, WRONG).then(() => null, (e: { status?: number }) => e);
      statuses.push(err?.status ?? 0);
    }
    expect(statuses).toEqual([401, 401, 401, 429, 429]);
    const err = await RawWorker.connect(m.url, WORKER).then(() => null, (e: { status?: number }) => e);
    expect(err?.status).toBe(429);
    expect(m.logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('authentication failed'))).toHaveLength(1);
  });
});

describe('lease ownership between sessions', () => {
  it('a session cannot complete, release or heartbeat a task leased to another session', async () => {
    const leaseTtlMs = 2_000;
    const m = await inProcess({ leaseTtlMs, listen: true });
    await m.app.inject({ method: 'POST', url: '/v1/jobs', headers: { authorization: `Bearer ${ADMIN}` }, payload: { tasks: [{ key: 'a', command: ['true'] }] } });
    m.app.pullman.reaper.start();
    const owner = await RawWorker.connect(m.url, WORKER);
    await owner.hello('owner');
    owner.send({ type: 'pull', credits: 1 });
    await owner.next((x) => x.type === 'tasks', 'the task');
    const { taskId, leaseId } = owner.tasks()[0]!;

    const thief = await RawWorker.connect(m.url, WORKER);
    const welcome = await thief.hello('thief');
    const report = { exitCode: 0, signal: null, timedOut: false, cancelled: false, durationMs: 1, stdoutTail: '', stderrTail: '', output: null, error: null };
    thief.send({ type: 'result', taskId, leaseId, report });
    thief.send({ type: 'release', taskId: taskId, leaseId, reason: 'shutdown' });
    await until('two acks to the thief', () => (thief.messages.filter((x) => x.type === 'ack' || x.type === 'acks').flatMap((x) => (x.type === 'acks' ? (x.acks as unknown[]) : [x])).length >= 2 ? true : undefined), 10_000, 20);
    const acks = thief.messages.filter((x) => x.type === 'ack' || x.type === 'acks').flatMap((x) => (x.type === 'acks' ? (x.acks as Array<Record<string, unknown>>) : [x]));
    expect(acks.map((a) => a.status)).toEqual(['stale', 'stale']);
    let task = (await m.app.inject({ url: `/v1/tasks/${taskId}`, headers: { authorization: `Bearer ${ADMIN}` } })).json();
    expect(task).toMatchObject({ state: 'running', attempts: 1 });
    expect(task.workerId).not.toBe(welcome.workerId);

    // The owner goes silent; the thief heartbeats busily. The thief's heartbeats must not keep
    // the owner's lease alive: the task is lost and requeued once the TTL passes.
    const beat = setInterval(() => thief.send({ type: 'heartbeat' }), 200);
    try {
      task = await until('the owner to lose the task', async () => {
        const t = (await m.app.inject({ url: `/v1/tasks/${taskId}`, headers: { authorization: `Bearer ${ADMIN}` } })).json();
        return t.state === 'queued' ? t : undefined;
      }, 30_000, 100);
    } finally {
      clearInterval(beat);
    }
    expect(task.history.map((h: { outcome: string }) => h.outcome)).toEqual(['lost']);
    owner.close();
    thief.close();
  });
});

describe('size limits', () => {
  it('JSON bodies over 32 MiB, NDJSON lines over 1 MiB and channel messages over 4 MiB are refused; the manager stays up', async () => {
    const m = await inProcess({ listen: true });
    const auth = { authorization: `Bearer ${ADMIN}` };
    const big = await fetch(`${m.url}/v1/jobs`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: `{"name":"${'x'.repeat(33 * 1024 * 1024)}"}` });
    expect(big.status).toBe(413);
    expect(((await big.json()) as { error: { code: string } }).error.code).toBe('PAYLOAD_TOO_LARGE');

    const job = (await m.app.inject({ method: 'POST', url: '/v1/jobs', headers: auth, payload: { open: true } })).json();
    const line = JSON.stringify({ shell: 'true', meta: { pad: 'y'.repeat(1024 * 1024 + 10) } });
    const nd = await fetch(`${m.url}/v1/jobs/${job.id}/tasks`, { method: 'POST', headers: { ...auth, 'content-type': 'application/x-ndjson' }, body: `{"shell":"true"}\n${line}\n` });
    expect(nd.status).toBe(413);
    expect(((await nd.json()) as { error: { code: string } }).error.code).toBe('PAYLOAD_TOO_LARGE');

    const w = await RawWorker.connect(m.url, WORKER);
    await w.hello('big');
    w.send(JSON.stringify({ type: 'heartbeat', pad: 'z'.repeat(MAX_MESSAGE_BYTES) }));
    expect((await w.whenClosed()).code).toBe(1009); // message too big
    expect((await fetch(`${m.url}/healthz`)).status).toBe(200);
  });
});

describe('TLS end to end and tokens in logs', () => {
  it('the manager serves https with a self-signed certificate; a worker trusting it via PULLMAN_CA_FILE completes a job; no token is ever logged', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pullman-tls-'));
    const cert = join(dir, 'cert.pem');
    const key = join(dir, 'key.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
    const ca = readFileSync(cert);
    const m = await startManager({ args: ['--tls-cert', cert, '--tls-key', key], env: { PULLMAN_LOG_LEVEL: 'trace' } });
    expect(m.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);

    const call = (method: string, path: string, token: string, body?: unknown) =>
      new Promise<{ status: number; json: Record<string, unknown> }>((resolve, reject) => {
        const req = httpsRequest(`${m.url}${path}`, { method, ca, headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) } }, (res) => {
          let text = '';
          res.on('data', (d: Buffer) => (text += d.toString()));
          res.on('end', () => resolve({ status: res.statusCode!, json: JSON.parse(text) as Record<string, unknown> }));
        });
        req.on('error', reject);
        req.end(body ? JSON.stringify(body) : undefined);
      });

    // Without the CA the certificate is refused.
    await expect(fetch(`${m.url}/healthz`)).rejects.toThrow();
    // Failed attempts with wrong tokens, and a worker token on an admin route: none is logged.
    expect((await call('GET', '/v1/jobs', WRONG)).status).toBe(401);
    expect((await call('GET', '/v1/jobs', m.workerToken)).status).toBe(403);
    await expect(RawWorker.connect(m.url, WRONG, { ca })).rejects.toThrow(/401/);

    const w = startWorker(m, { name: 'tls', slots: 2, env: { PULLMAN_CA_FILE: cert, PULLMAN_LOG_LEVEL: 'trace' } });
    const created = await call('POST', '/v1/jobs', m.adminToken, { tasks: [{ key: 'a', shell: 'echo "{\\"ok\\":1}" > "$PULLMAN_OUTPUT"' }, { key: 'b', command: ['true'] }] });
    expect(created.status).toBe(201);
    const jobId = created.json.id as string;
    const done = await until('the job over TLS', async () => {
      const j = await call('GET', `/v1/jobs/${jobId}`, m.adminToken);
      return j.json.state === 'active' ? undefined : j.json;
    }, 60_000, 200);
    expect(done).toMatchObject({ state: 'succeeded', counts: { succeeded: 2 } });
    expect(w.logs.some((l) => l.msg === 'registered with the manager')).toBe(true);
    expect(checkInvariants(m.dbPath, { jobIds: [jobId], leaseTtlMs: 30_000 }).violations).toEqual([]);

    const text = allOutput();
    expect(text.length).toBeGreaterThan(1000); // trace logs really were captured
    for (const t of [m.adminToken, m.workerToken, WRONG]) expect(text.includes(t), 'a token appeared in a log').toBe(false);
  });
});
