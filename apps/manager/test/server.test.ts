import { existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { TestWorker } from './ws-client.js';
import { runManagerToExit, spawnManager, type ManagerProcess } from './process.js';

const running: ManagerProcess[] = [];
afterEach(() => {
  for (const m of running.splice(0)) if (m.proc.exitCode === null) m.proc.kill('SIGKILL');
});

const dataDir = () => mkdtempSync(join(tmpdir(), 'pullman-srv-'));

async function start(dir: string, env: NodeJS.ProcessEnv = {}): Promise<ManagerProcess> {
  const m = await spawnManager(['--port', '0', '--data-dir', dir], env);
  running.push(m);
  return m;
}

async function api(m: ManagerProcess, dir: string, method: string, path: string, body?: unknown) {
  const token = readFileSync(join(dir, 'admin.token'), 'utf8').trim();
  const res = await fetch(`${m.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, body: (await res.json()) as Record<string, any> };
}

describe('pullman-manager process', () => {
  it('exits 2 with one line naming the setting on bad configuration', async () => {
    for (const [args, env, expected] of [
      [['--port', 'abc'], {}, '--port / PULLMAN_PORT: "abc"'],
      [[], { PULLMAN_LEASE_TTL: '1s', PULLMAN_HEARTBEAT_INTERVAL: '1s' }, 'PULLMAN_LEASE_TTL: "1s"'],
      [['--data-dir', dataDir()], { PULLMAN_WORKER_TOKEN: 'tiny' }, 'PULLMAN_WORKER_TOKEN'],
      [['--frobnicate'], {}, "unknown option '--frobnicate'"],
    ] as const) {
      const r = await runManagerToExit([...args], { ...env });
      expect(r.code).toBe(2);
      const lines = r.stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/^pullman-manager: /);
      expect(lines[0]).toContain(expected);
    }
  });

  it('prints its URL, generates tokens, and stops cleanly on SIGTERM', async () => {
    const dir = dataDir();
    const m = await start(dir);
    expect(m.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(statSync(join(dir, 'admin.token')).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'worker.token')).mode & 0o777).toBe(0o600);
    expect(await (await fetch(`${m.url}/healthz`)).json()).toEqual({ status: 'ok' });
    const created = await api(m, dir, 'POST', '/v1/jobs', { tasks: [{ command: ['true'] }] });
    expect(created.status).toBe(201);
    m.proc.kill('SIGTERM');
    expect(await m.exited).toEqual({ code: 0, signal: null });
    // The WAL was checkpointed into the main file at shutdown.
    const wal = join(dir, 'pullman.db-wal');
    expect(!existsSync(wal) || statSync(wal).size === 0).toBe(true);
    // Tokens are reused, not regenerated, on the next start; the job is still there.
    const token = readFileSync(join(dir, 'admin.token'), 'utf8');
    const again = await start(dir);
    expect(readFileSync(join(dir, 'admin.token'), 'utf8')).toBe(token);
    expect((await api(again, dir, 'GET', `/v1/jobs/${created.body.id}`)).body.counts.total).toBe(1);
  });

  it('keeps every acknowledged submission and result across kill -9', async () => {
    const dir = dataDir();
    const m = await start(dir);
    const acked: Array<{ id: string; total: number }> = [];
    for (let i = 0; i < 20; i++) {
      const r = await api(m, dir, 'POST', '/v1/jobs', { name: `j${i}`, tasks: Array.from({ length: 50 }, (_, k) => ({ command: ['echo', String(k)], key: `k${k}` })) });
      expect(r.status).toBe(201);
      acked.push({ id: r.body.id, total: r.body.counts.total });
    }
    // A worker records results; every acked one must survive.
    const w = await TestWorker.connect(m.url, readFileSync(join(dir, 'worker.token'), 'utf8').trim());
    await w.hello();
    w.send({ type: 'pull', credits: 4 });
    const recorded: string[] = [];
    for (let round = 0; round < 10; round++) {
      const { tasks } = await w.next('tasks');
      for (const t of tasks) {
        const ack = await w.result(t.taskId, t.leaseId, { output: { n: round } });
        expect(ack.status).toBe('recorded');
        recorded.push(t.taskId);
      }
      w.send({ type: 'pull', credits: tasks.length });
    }
    m.proc.kill('SIGKILL');
    expect((await m.exited).signal).toBe('SIGKILL');
    w.ws.terminate();

    const db = new Database(join(dir, 'pullman.db'), { readonly: true });
    expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
    for (const j of acked) {
      const n = db.prepare('SELECT count(*) AS n FROM tasks WHERE job_id = ?').get(Number(j.id.slice(4))) as { n: number };
      expect(n.n).toBe(j.total);
    }
    for (const id of recorded) {
      const row = db.prepare('SELECT state FROM tasks WHERE id = ?').get(Number(id.slice(5))) as { state: string };
      expect(row.state).toBe('succeeded');
    }
    db.close();

    // And the restarted manager serves them.
    const again = await start(dir);
    const jobs = await api(again, dir, 'GET', '/v1/jobs?limit=100');
    const totals = (jobs.body.jobs as Array<{ counts: { total: number; succeeded: number } }>).reduce((a, j) => ({ total: a.total + j.counts.total, succeeded: a.succeeded + j.counts.succeeded }), { total: 0, succeeded: 0 });
    expect(totals).toEqual({ total: 1000, succeeded: recorded.length });
  });
});
