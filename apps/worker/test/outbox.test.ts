import { execFileSync, spawnSync } from 'node:child_process';
import { appendFileSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import type { ExecutionReport } from '@pullman/protocol';
import { Outbox, readOutboxOf, type PendingResult } from '../src/outbox.js';

const workDirs: string[] = [];
const opened: Outbox[] = [];
afterEach(async () => {
  for (const o of opened.splice(0)) await o.close();
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
  opened.push(outbox);
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

  it('keeps one journal, private to the owner, and no temp file', async () => {
    const outbox = await openOutbox(freshWorkDir('files'));
    await outbox.put(result('task-5', 'lease-5'));
    await outbox.remove('task-5', 'lease-5');
    await outbox.put(result('task-6', 'lease-6'));
    expect(readdirSync(outbox.dir)).toEqual(['journal']);
    expect(statSync(join(outbox.dir, 'journal')).mode & 0o077).toBe(0);
  });

  it('skips a torn last line (a crash mid-write) and removes what a crash left of a compaction or an older release', async () => {
    const workDir = freshWorkDir('torn');
    const good = result('task-6', 'lease-6');
    await (await openOutbox(workDir)).put(good);
    const dir = join(workDir, 'outbox');
    appendFileSync(join(dir, 'journal'), 'P {"taskId":"task-7","lea');
    writeFileSync(join(dir, 'journal.new'), 'P {}\n');
    writeFileSync(join(dir, 'task-8.lease-8.json.tmp'), '{"taskId":"task-8","lea');
    // Looking in from outside changes nothing.
    expect((await readOutboxOf(workDir)).pending).toEqual([good]);
    expect(readdirSync(dir).sort()).toEqual(['journal', 'journal.new', 'task-8.lease-8.json.tmp']);
    const reopened = await openOutbox(workDir);
    expect(await reopened.pending()).toEqual([good]);
    expect(readdirSync(dir)).toEqual(['journal']);
  });

  it('skips a line that does not parse, and keeps the journal as it was for a human', async () => {
    const workDir = freshWorkDir('corrupt');
    const a = result('task-11', 'lease-11');
    const b = result('task-12', 'lease-12');
    const outbox = await openOutbox(workDir);
    await outbox.put(a);
    const journal = join(outbox.dir, 'journal');
    appendFileSync(journal, 'this is {not json\n');
    appendFileSync(journal, `P ${JSON.stringify(b)}\n`);
    const before = readFileSync(journal, 'utf8');
    const reopened = new Outbox(workDir);
    opened.push(reopened);
    const found = await reopened.open();
    expect(await reopened.pending()).toEqual([a, b]);
    const kept = readdirSync(outbox.dir).filter((n) => n.startsWith('journal.corrupt-'));
    expect(kept).toHaveLength(1);
    expect(found).toEqual({ keptAside: [join(outbox.dir, kept[0]!)], problem: null, running: [] });
    expect(readFileSync(join(outbox.dir, kept[0]!), 'utf8')).toBe(before);
    // The journal itself holds only what is pending now.
    expect(await (await openOutbox(workDir)).pending()).toEqual([a, b]);
  });

  it('folds results an older release left as one file each into the journal, and deletes the files', async () => {
    const workDir = freshWorkDir('legacy');
    const dir = join(workDir, 'outbox');
    mkdirSync(dir, { recursive: true });
    const old = result('task-20', 'lease-20', { exitCode: 4 });
    writeFileSync(join(dir, 'task-20.lease-20.json'), JSON.stringify(old));
    writeFileSync(join(dir, 'task-21.lease-21.json'), 'this is {not json');
    writeFileSync(join(dir, 'task-22.lease-22.json'), '{"taskId":"task-22"}'); // JSON, not a result
    const outbox = await openOutbox(workDir);
    expect(await outbox.pending()).toEqual([old]);
    expect(readdirSync(dir).sort()).toEqual(['journal', 'task-21.lease-21.json.corrupt', 'task-22.lease-22.json.corrupt']);
    expect(await (await openOutbox(workDir)).pending()).toEqual([old]);
  });

  it('makes the journal again when the outbox dir was removed under it, instead of writing to a file no name reaches', async () => {
    const workDir = freshWorkDir('replaced');
    const outbox = await openOutbox(workDir);
    const a = result('task-30', 'lease-30');
    await outbox.put(a);
    rmSync(outbox.dir, { recursive: true });
    // Appended to the open journal, it would be acknowledged and gone at the next start.
    const b = result('task-31', 'lease-31');
    await outbox.put(b);
    expect((await readOutboxOf(workDir)).pending).toEqual([a, b]);
    // Replaced by a file (disk trouble): the put fails (and the daemon says so).
    rmSync(outbox.dir, { recursive: true });
    writeFileSync(outbox.dir, '');
    await expect(outbox.put(result('task-32', 'lease-32'))).rejects.toThrow(/EEXIST|ENOTDIR/);
    rmSync(outbox.dir);
    const d = result('task-33', 'lease-33');
    await outbox.put(d);
    // Made again with every result not yet acked, except the one reported as not stored (the
    // daemon holds that one in memory and says so).
    expect(await (await openOutbox(workDir)).pending()).toEqual([a, b, d]);
  });

  it('renames aside a journal that is not a regular file, and starts a new one', async () => {
    // A symlink's target holds a result: not ours to read, nor to replace.
    const writeElsewhere = (p: string): string => {
      const target = `${p}-target`;
      writeFileSync(target, `P ${JSON.stringify(result('task-elsewhere', 'L'))}\n`);
      return target;
    };
    for (const make of [(p: string) => mkdirSync(p), (p: string) => execFileSync('mkfifo', [p]), (p: string) => symlinkSync(writeElsewhere(p), p)]) {
      const workDir = freshWorkDir('not-a-file');
      const dir = join(workDir, 'outbox');
      mkdirSync(dir);
      make(join(dir, 'journal'));
      // A FIFO would hang the read, a directory fail it; a rewrite would replace a symlink.
      const outbox = new Outbox(workDir);
      opened.push(outbox);
      const found = await outbox.open();
      expect(found.problem).toBeNull();
      expect(found.keptAside).toEqual([expect.stringMatching(/\/journal\.unreadable-\d+$/)]);
      const a = result('task-40', 'lease-40');
      await outbox.put(a);
      expect((await readOutboxOf(workDir)).pending).toEqual([a]);
      expect(lstatSync(join(dir, 'journal')).isFile()).toBe(true);
    }
  });

  it('starts even when it cannot write its journal, keeps the old one, and stores again once it can', async () => {
    const workDir = freshWorkDir('cannot-write');
    const a = result('task-50', 'lease-50');
    const first = await openOutbox(workDir);
    await first.put(a);
    await first.close();
    // Its temp file's name is taken by a directory: every rewrite fails (as on a full disk).
    const blocker = join(workDir, 'outbox', 'journal.new');
    mkdirSync(join(blocker, 'x'), { recursive: true });
    const outbox = new Outbox(workDir);
    opened.push(outbox);
    const found = await outbox.open();
    expect(found.problem?.message).toMatch(/EISDIR|ENOTEMPTY|EPERM/);
    expect(await outbox.pending()).toEqual([a]);
    await expect(outbox.put(result('task-51', 'lease-51'))).rejects.toThrow();
    // The journal as it was still holds the old result.
    expect((await readOutboxOf(workDir)).pending).toEqual([a]);
    rmSync(blocker, { recursive: true });
    const c = result('task-52', 'lease-52');
    await outbox.put(c);
    expect((await readOutboxOf(workDir)).pending).toEqual([a, c]);
  });

  it('compacts a journal of forgotten lines, but not a backlog of pending results', async () => {
    const workDir = freshWorkDir('compact');
    const outbox = await openOutbox(workDir);
    const journal = join(outbox.dir, 'journal');
    const tail = 'x'.repeat(64 * 1024);
    // Put and acked, one after the other: past 4 MiB the journal is rewritten with what is left.
    for (let i = 0; i < 100; i++) {
      await outbox.put(result(`task-${i}`, 'L', { stdoutTail: tail }));
      await outbox.remove(`task-${i}`, 'L');
    }
    expect(statSync(journal).size).toBeLessThan(4 * 1024 * 1024);
    // A backlog (nothing acked, a manager outage) past 4 MiB is appended to, not rewritten on
    // every put: the journal stays the same file.
    for (let i = 0; i < 80; i++) await outbox.put(result(`backlog-${i}`, 'L', { stdoutTail: tail }));
    // (Checked after each put: a rewrite may reuse the inode number the one before it freed.)
    const ino = statSync(journal).ino;
    for (let i = 80; i < 90; i++) {
      await outbox.put(result(`backlog-${i}`, 'L', { stdoutTail: tail }));
      expect(statSync(journal).ino).toBe(ino);
    }
    expect(statSync(journal).size).toBeGreaterThan(90 * 64 * 1024);
    expect((await (await openOutbox(workDir)).pending()).map((p) => p.taskId)).toEqual(Array.from({ length: 90 }, (_, i) => `backlog-${i}`));
  });

  it('after a write that failed half-way, never glues the next line to the torn one', () => {
    // Runs the built module (dist/, made by the build every test run depends on) in a child
    // process with a file size limit. A real short write: a file size limit of 4 KiB (SIGXFSZ ignored, so the write fails with
    // EFBIG). Appended after the torn part, the next put was lost at the next start.
    const workDir = freshWorkDir('short-write');
    const outboxJs = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'outbox.js');
    const script = `
      const { Outbox } = await import(${JSON.stringify(outboxJs)});
      const o = new Outbox(process.argv[1]);
      await o.open();
      const r = (id, tail) => ({ taskId: id, leaseId: 'L', report: { exitCode: 0, signal: null, timedOut: false, cancelled: false, durationMs: 1, stdoutTail: tail, stderrTail: '', output: null, error: null } });
      await o.put(r('small', 'a'));
      const big = await o.put(r('big', 'x'.repeat(20000))).then(() => 'stored', (e) => e.code);
      await o.remove('big', 'L'); // acked by the manager all the same
      await o.put(r('after', 'b'));
      console.log(big);
    `;
    const run = spawnSync('sh', ['-c', 'trap "" XFSZ; ulimit -f 8; exec "$0" --input-type=module -e "$1" "$2"', process.execPath, script, workDir], { encoding: 'utf8', timeout: 30_000 });
    expect(run.stderr).toBe('');
    expect(run.stdout.trim()).toBe('EFBIG');
    return openOutbox(workDir).then(async (o) => expect((await o.pending()).map((p) => p.taskId)).toEqual(['small', 'after']));
  });

  it('keeps runs by lease until they end, and hands the ones not ended to the next start, which keeps them until it ends them', async () => {
    const workDir = freshWorkDir('runs');
    const outbox = await openOutbox(workDir);
    const a = { taskId: 'task-60', leaseId: 'lease-a', pid: 101 };
    const b = { taskId: 'task-60', leaseId: 'lease-b', pid: 102 }; // the same task, run again
    const c = { taskId: 'task-61', leaseId: 'lease-c', pid: 103 };
    await Promise.all([outbox.started(a), outbox.started(b), outbox.started(c)]);
    const done = result('task-60', 'lease-a', { exitCode: 3 });
    await outbox.put(done);
    await outbox.ended('task-60', 'lease-a');
    expect(await readOutboxOf(workDir)).toEqual({ pending: [done], running: [b, c] });
    await outbox.ended('task-61', 'lease-c');
    await outbox.ended('task-61', 'lease-c'); // twice: a no-op
    // A crash: the next start is told of the run not ended. Until it ends it, a crash again
    // (before it killed the process, say) tells the start after it the same.
    for (let start = 0; start < 2; start++) {
      const next = new Outbox(workDir);
      opened.push(next);
      expect(await next.open()).toEqual({ keptAside: [], problem: null, running: [b] });
      expect(await next.pending()).toEqual([done]);
    }
    const last = opened.at(-1)!;
    await last.ended('task-60', 'lease-b');
    expect(await readOutboxOf(workDir)).toEqual({ pending: [done], running: [] });
  });

  it('rewrites runs by lease, leaves ended ones out, and writes one whose line failed once it can', async () => {
    const workDir = freshWorkDir('runs-by-lease');
    const outbox = await openOutbox(workDir);
    const a = { taskId: 't', leaseId: 'a', pid: 1 };
    const b = { taskId: 't', leaseId: 'b', pid: 2 }; // the same task under another lease
    const c = { taskId: 'u', leaseId: 'c', pid: 3 };
    await Promise.all([outbox.started(a), outbox.started(b), outbox.started(c)]);
    await outbox.ended('t', 'a');
    await outbox.ended('u', 'c');
    rmSync(join(outbox.dir, 'journal')); // the next put makes the journal again, from memory
    await outbox.put(result('x', 'y'));
    expect((await readOutboxOf(workDir)).running).toEqual([b]);
    // Every write fails now (the rewrite's temp name is taken by a directory) ...
    const blocker = join(outbox.dir, 'journal.new');
    mkdirSync(join(blocker, 'x'), { recursive: true });
    rmSync(join(outbox.dir, 'journal'));
    await expect(outbox.put(result('x2', 'y2'))).rejects.toThrow();
    const d = { taskId: 'v', leaseId: 'd', pid: 4 };
    await expect(outbox.started(d)).rejects.toThrow();
    // ... and a run started meanwhile goes into the journal once a write can make it.
    rmSync(blocker, { recursive: true });
    await outbox.put(result('x3', 'y3'));
    expect((await readOutboxOf(workDir)).running).toEqual([b, d]);
  });

  it('carries runs not ended through a rewrite', async () => {
    const workDir = freshWorkDir('runs-rewrite');
    const outbox = await openOutbox(workDir);
    const run = { taskId: 'task-70', leaseId: 'L', pid: 7 };
    await outbox.started(run);
    // Made again (its file removed under it) at the next put: the run goes with it.
    rmSync(join(outbox.dir, 'journal'));
    await outbox.put(result('task-71', 'L'));
    expect((await readOutboxOf(workDir)).running).toEqual([run]);
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
});
