import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BackgroundCheckpointer } from '../src/checkpointer.js';
import { TaskStore } from '../src/index.js';
import { assertConsistent, reopen } from './helpers.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tempDb(): string {
  const dir = mkdtempSync(join(tmpdir(), 'pullman-ckpt-test-'));
  dirs.push(dir);
  return join(dir, 'pullman.db');
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('background checkpoint', () => {
  it('copies committed pages into the database file from its own thread', async () => {
    const path = tempDb();
    const store = new TaskStore({ path, leaseTtlMs: 30_000, checkpoint: 'background' });
    try {
      const before = statSync(path).size;
      const { job } = store.createJob({ tasks: Array.from({ length: 2_000 }, (_, i) => ({ key: `k${i}`, shell: 'true' })) });
      expect(job.counts.queued).toBe(2_000);
      // Far below the main connection's own checkpoint size: only the thread moves these pages.
      const walPages = (statSync(`${path}-wal`).size - 32) / (4096 + 24);
      expect(walPages).toBeGreaterThan(10);
      expect(walPages).toBeLessThan(store.db.pragma('wal_autocheckpoint', { simple: true }) as number);
      await waitFor('the database file to grow', () => statSync(path).size > before);
    } finally {
      store.close();
    }
    // close() stopped the thread before truncating the WAL; everything is in the file.
    expect(existsSync(`${path}-wal`) ? statSync(`${path}-wal`).size : 0).toBe(0);
    const again = reopen(path);
    try {
      expect(again.getJob(1)!.counts.queued).toBe(2_000);
      assertConsistent(again);
    } finally {
      again.close();
    }
  });

  it('closes at once, even right after opening', () => {
    const path = tempDb();
    for (let i = 0; i < 3; i++) new TaskStore({ path, leaseTtlMs: 30_000, checkpoint: 'background' }).close();
    const store = reopen(path);
    expect(store.db.pragma('integrity_check', { simple: true })).toBe('ok');
    store.close();
  });

  it('reports a thread that cannot open the database, and says it ended', async () => {
    const errors: string[] = [];
    let exited = false;
    const checkpointer = new BackgroundCheckpointer(join(tempDb(), 'missing', 'pullman.db'), { onError: (m) => errors.push(m), onExit: () => (exited = true) });
    await waitFor('the thread to end', () => exited);
    expect(errors.join('\n')).toMatch(/unable to open database file|directory does not exist/);
    checkpointer.stop(); // a no-op now: nothing left to stop
  });
});
