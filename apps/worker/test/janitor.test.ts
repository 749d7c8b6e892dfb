import { mkdirSync, mkdtempSync, existsSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sweepWorkDir } from '../src/janitor.js';

const HOUR = 3_600_000;

function workDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'pullman-janitor-'));
  for (const d of ['logs', 'scratch', 'outbox', 'running']) mkdirSync(join(dir, d));
  return dir;
}

function touch(path: string, ageMs: number, now: number, dir = false): void {
  if (dir) mkdirSync(path, { recursive: true });
  else writeFileSync(path, 'x');
  const t = (now - ageMs) / 1000;
  utimesSync(path, t, t);
}

describe('sweepWorkDir', () => {
  it('removes old logs and scratch dirs, keeps recent ones, the in-use ones and everything else', async () => {
    const dir = workDir();
    const now = Date.now();
    touch(join(dir, 'logs', 'task-1.1.stdout.log'), 200 * HOUR, now);
    touch(join(dir, 'logs', 'task-2.1.stdout.log'), 1 * HOUR, now);
    touch(join(dir, 'logs', 'task-3.1.stdout.log'), 200 * HOUR, now); // still running
    touch(join(dir, 'scratch', 'task-1.1'), 200 * HOUR, now, true);
    touch(join(dir, 'outbox', 'task-9.L.json'), 500 * HOUR, now);
    touch(join(dir, 'running', 'task-3.json'), 500 * HOUR, now);

    const removed = await sweepWorkDir(dir, 168 * HOUR, now, new Set(['task-3.1.stdout.log']));

    expect(removed).toBe(2);
    expect(existsSync(join(dir, 'logs', 'task-1.1.stdout.log'))).toBe(false);
    expect(existsSync(join(dir, 'scratch', 'task-1.1'))).toBe(false);
    expect(existsSync(join(dir, 'logs', 'task-2.1.stdout.log'))).toBe(true);
    expect(existsSync(join(dir, 'logs', 'task-3.1.stdout.log'))).toBe(true);
    expect(existsSync(join(dir, 'outbox', 'task-9.L.json'))).toBe(true);
    expect(existsSync(join(dir, 'running', 'task-3.json'))).toBe(true);
  });

  it('copes with a work dir that has no logs or scratch yet', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pullman-janitor-empty-'));
    expect(await sweepWorkDir(dir, HOUR)).toBe(0);
  });
});
