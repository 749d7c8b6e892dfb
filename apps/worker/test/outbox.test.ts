import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { ExecutionReport } from '@pullman/protocol';
import { Outbox, type PendingResult } from '../src/outbox.js';

const workDirs: string[] = [];
afterEach(() => {
  for (const dir of workDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function freshWorkDir(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `pullman-outbox-${name}-`));
  workDirs.push(dir);
  return dir;
}

async function openOutbox(workDir: string): Promise<Outbox> {
  const outbox = new Outbox(workDir);
  await outbox.open();
  return outbox;
}

function report(over: Partial<ExecutionReport> = {}): ExecutionReport {
  return {
    exitCode: 0,
    signal: null,
    timedOut: false,
    cancelled: false,
    durationMs: 12,
    stdoutTail: 'out ✓\n',
    stderrTail: '',
    output: { answer: 42 },
    error: null,
    ...over,
  };
}

const result = (taskId: string, leaseId: string, over: Partial<ExecutionReport> = {}): PendingResult => ({ taskId, leaseId, report: report(over) });

describe('Outbox', () => {
  it('round-trips put, pending and remove', async () => {
    const outbox = await openOutbox(freshWorkDir('roundtrip'));
    expect(await outbox.pending()).toEqual([]);

    const a = result('task-1', 'lease-a');
    const b = result('task-2', 'lease-b', { exitCode: 3, output: null, error: { code: 'OUTPUT_INVALID', message: 'bad' } });
    await outbox.put(a);
    await outbox.put(b);
    expect(await outbox.pending()).toEqual([a, b]);

    await outbox.remove('task-1', 'lease-a');
    expect(await outbox.pending()).toEqual([b]);
    await outbox.remove('task-2', 'lease-b');
    expect(await outbox.pending()).toEqual([]);
  });

  it('keeps results of the same task under different leases apart', async () => {
    const outbox = await openOutbox(freshWorkDir('leases'));
    const first = result('task-9', 'lease-1', { exitCode: 1 });
    const second = result('task-9', 'lease-2', { exitCode: 0 });
    await outbox.put(first);
    await outbox.put(second);
    expect(await outbox.pending()).toEqual([first, second]);
    await outbox.remove('task-9', 'lease-1');
    expect(await outbox.pending()).toEqual([second]);
  });

  it('overwrites a result put twice under the same task and lease', async () => {
    const outbox = await openOutbox(freshWorkDir('overwrite'));
    await outbox.put(result('task-3', 'lease-x', { exitCode: 1 }));
    const latest = result('task-3', 'lease-x', { exitCode: 2 });
    await outbox.put(latest);
    expect(await outbox.pending()).toEqual([latest]);
  });

  it('removing an unknown result is a no-op', async () => {
    const outbox = await openOutbox(freshWorkDir('remove-unknown'));
    const kept = result('task-4', 'lease-4');
    await outbox.put(kept);
    await expect(outbox.remove('task-404', 'lease-404')).resolves.toBeUndefined();
    expect(await outbox.pending()).toEqual([kept]);
  });

  it('leaves no temp file behind and writes the file private to the owner', async () => {
    const outbox = await openOutbox(freshWorkDir('files'));
    await outbox.put(result('task-5', 'lease-5'));
    const names = readdirSync(outbox.dir);
    expect(names).toEqual(['task-5.lease-5.json']);
    expect(statSync(join(outbox.dir, names[0]!)).mode & 0o077).toBe(0);
  });

  it('ignores and deletes leftover .tmp files (torn writes)', async () => {
    const outbox = await openOutbox(freshWorkDir('tmp'));
    const good = result('task-6', 'lease-6');
    await outbox.put(good);
    const torn = join(outbox.dir, 'task-7.lease-7.json.tmp');
    writeFileSync(torn, '{"taskId":"task-7","lea');
    expect(await outbox.pending()).toEqual([good]);
    expect(existsSync(torn)).toBe(false);
    expect(readdirSync(outbox.dir)).toEqual(['task-6.lease-6.json']);
  });

  it('survives re-instantiation: a new Outbox on the same work dir sees the results', async () => {
    const workDir = freshWorkDir('reopen');
    const a = result('task-8', 'lease-8');
    const b = result('task-10', 'lease-10', { signal: 'SIGKILL', exitCode: null });
    const before = await openOutbox(workDir);
    await before.put(a);
    await before.put(b);

    const after = await openOutbox(workDir);
    expect(after.dir).toBe(before.dir);
    const pending = await after.pending();
    expect(pending).toHaveLength(2);
    expect(pending).toEqual(expect.arrayContaining([a, b]));

    await after.remove('task-8', 'lease-8');
    expect(await (await openOutbox(workDir)).pending()).toEqual([b]);
  });

  it('renames a corrupt file to .corrupt and skips it', async () => {
    const outbox = await openOutbox(freshWorkDir('corrupt'));
    const good = result('task-11', 'lease-11');
    await outbox.put(good);
    const corrupt = join(outbox.dir, 'task-12.lease-12.json');
    writeFileSync(corrupt, 'this is {not json');

    expect(await outbox.pending()).toEqual([good]);
    expect(existsSync(corrupt)).toBe(false);
    expect(existsSync(`${corrupt}.corrupt`)).toBe(true);
    // Stays skipped, and kept for a human.
    expect(await outbox.pending()).toEqual([good]);
    expect(readdirSync(outbox.dir).sort()).toEqual(['task-11.lease-11.json', 'task-12.lease-12.json.corrupt']);
  });
});
