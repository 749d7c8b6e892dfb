/**
 * Test harness: a real app on a real SQLite file in a fresh temp dir, with known tokens.
 * `clock` lets a test move time for lease expiry without sleeping.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { TaskStore } from '@pullman/store';
import { buildApp } from '../src/app.js';

export const ADMIN = 'admin-token-0123456789abcdef';
export const WORKER = 'worker-token-0123456789abcdef';
export const auth = (token = ADMIN) => ({ Authorization: `Bearer ${token}` });

export interface TestManager {
  app: FastifyInstance;
  store: TaskStore;
  dir: string;
  clock: { now: () => number; advance: (ms: number) => void };
  /** Base URL when started with listen: true. */
  url: string;
  close(): Promise<void>;
}

export async function startManager(opts: { listen?: boolean; leaseTtlMs?: number; heartbeatIntervalMs?: number; realClock?: boolean; workerBundle?: string } = {}): Promise<TestManager> {
  const dir = mkdtempSync(join(tmpdir(), 'pullman-mgr-'));
  let offset = 0;
  const clock = {
    now: () => Date.now() + offset,
    advance: (ms: number) => {
      offset += ms;
    },
  };
  const leaseTtlMs = opts.leaseTtlMs ?? 30_000;
  const store = new TaskStore({ path: join(dir, 'pullman.db'), leaseTtlMs, clock });
  const app = await buildApp({
    store,
    tokens: { admin: ADMIN, worker: WORKER },
    heartbeatIntervalMs: opts.heartbeatIntervalMs ?? 5_000,
    leaseTtlMs,
    startReaper: false,
    logger: false,
    now: clock.now,
    ...(opts.workerBundle ? { workerBundle: opts.workerBundle } : {}),
  });
  let url = '';
  if (opts.listen) url = await app.listen({ host: '127.0.0.1', port: 0 });
  return {
    app,
    store,
    dir,
    clock,
    url,
    async close() {
      await app.close();
      store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
