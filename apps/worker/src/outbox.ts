/**
 * The durable result outbox. A finished result is written and fsynced here while it is sent
 * (the daemon does not wait for the write; see startTask there), and forgotten only when the
 * manager acks it, so neither a manager outage nor a worker crash loses finished work.
 *
 * One append-only journal, `outbox/journal`: a line `P <result JSON>` puts a result, a line
 * `A <[taskId, leaseId] JSON>` forgets one. Lines written in the same event-loop turn go out in
 * one write, with one fdatasync when any of them is a put. Why: a file per result cost a temp
 * file, two fsyncs, a rename and, on the ack, a removal: ~10 thread-pool round trips per task,
 * the largest share of a worker's CPU for short tasks (docs/benchmarks.md), and two fsyncs per
 * task on a VM's standard disk, where each takes milliseconds.
 *
 * Crash safety: a put is acknowledged (its promise resolves) only after the fdatasync that
 * covers it. A crash mid-write leaves a torn last line, which is skipped; a line that does not
 * parse anywhere else is skipped too, and the journal is kept beside as `journal.corrupt-<ms>`
 * for a human. At open, and whenever the journal has grown past COMPACT_BYTES, it is rewritten
 * with only the results still pending (temp file, fsync, rename, directory fsync).
 *
 * Results of older releases, one file per result (`<taskId>.<leaseId>.json`), are read at open,
 * folded into the journal and then deleted.
 */
import { mkdir, open, readdir, readFile, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { ExecutionReport } from '@pullman/protocol';
import { syncDir, writeSynced } from './durable.js';

export interface PendingResult {
  taskId: string;
  leaseId: string;
  report: ExecutionReport;
}

/** Past this size the journal is rewritten with only what is still pending. */
const COMPACT_BYTES = 4 * 1024 * 1024;

const keyOf = (taskId: string, leaseId: string): string => JSON.stringify([taskId, leaseId]);
const parsePut = (line: string): PendingResult => JSON.parse(line.slice(2)) as PendingResult;
const durableBatch = (batch: readonly Queued[]): boolean => batch.some((q) => q.durable);

interface Queued {
  line: string;
  durable: boolean;
  done: (err: Error | null) => void;
}

export class Outbox {
  readonly dir: string;
  private readonly path: string;
  private file: FileHandle | null = null;
  /** What the journal holds: the put line of each pending result, by key, oldest first. */
  private readonly puts = new Map<string, string>();
  private queue: Queued[] = [];
  private flushing: Promise<void> | null = null;
  private size = 0;
  /**
   * A write or fdatasync failed (a full disk): the journal may end in part of a line, and a line
   * appended to it would be glued to that part and lost at the next read, fsynced or not. The
   * next batch rewrites the journal first.
   */
  private torn = false;
  /** The inode of the open journal: the path must still name it for an append to count. */
  private ino = -1;

  constructor(workDir: string) {
    this.dir = join(workDir, 'outbox');
    this.path = join(this.dir, 'journal');
  }

  /** Reads what is pending (journal and older files), and starts a journal holding just that. */
  async open(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const found = await readOutbox(this.dir);
    for (const path of found.leftovers) await rm(path, { force: true });
    // Unreadable despite the rename protocol (disk trouble): kept for a human, skipped.
    for (const path of found.unreadable) await rename(path, `${path}.corrupt`).catch(() => {});
    if (found.corruptJournal !== null) await writeSynced(join(this.dir, `journal.corrupt-${Date.now()}`), found.corruptJournal, 'wx');
    for (const [key, line] of found.puts) this.puts.set(key, line);
    await this.rewrite();
    // Only now that the journal holds them: a crash before this reads them again.
    for (const path of found.legacy) await rm(path, { force: true });
  }

  /** Writes a result durably: resolves once it is on disk. A second put of the same lease replaces the first. */
  put(result: PendingResult): Promise<void> {
    const key = keyOf(result.taskId, result.leaseId);
    const line = `P ${JSON.stringify(result)}\n`;
    this.puts.delete(key);
    this.puts.set(key, line);
    return this.append(line, true);
  }

  /**
   * Forgets a result the manager acknowledged (recorded or stale). Not fsynced: lost in a
   * crash, the result is only sent again, and the manager answers it `stale`.
   */
  async remove(taskId: string, leaseId: string): Promise<void> {
    if (!this.puts.delete(keyOf(taskId, leaseId))) return;
    await this.append(`A ${JSON.stringify([taskId, leaseId])}\n`, false);
  }

  /** Every result still waiting for an ack, oldest first. */
  async pending(): Promise<PendingResult[]> {
    return [...this.puts.values()].map(parsePut);
  }

  /** Closes the journal (after the last write). */
  async close(): Promise<void> {
    while (this.flushing) await this.flushing;
    await this.file?.close();
    this.file = null;
  }

  private append(line: string, durable: boolean): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queue.push({ line, durable, done: (err) => (err ? reject(err) : resolve()) });
      // Lines of the same turn go together (setImmediate runs after the turn's I/O callbacks).
      if (!this.flushing) this.flushing = new Promise((r) => setImmediate(r)).then(() => this.flush());
    });
  }

  /** Writes what is queued, one batch at a time, until nothing is. */
  private async flush(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue;
      this.queue = [];
      let err: Error | null = null;
      try {
        if (!this.file) throw new Error('the outbox is not open');
        // The batch's own puts are in this.puts already: a rewrite carries them.
        // An outbox dir removed or replaced under the worker (an operator's clean-up): appends
        // would go to a file no name reaches, lost at the next start while acknowledged as
        // stored. The path must still name the open journal, or it is made again (or the
        // batch fails, and the daemon keeps those results in memory and says so).
        const named = durableBatch(batch) ? await stat(this.path).then((st) => st.ino === this.ino, () => false) : true;
        if (this.torn || !named || this.size > COMPACT_BYTES) {
          // Nothing to append after it: the rewrite wrote and fsynced every pending put, this
          // batch's too, and none that this batch forgets.
          await this.rewrite();
          this.torn = false;
          for (const q of batch) q.done(null);
          continue;
        }
        const data = batch.map((q) => q.line).join('');
        this.torn = true; // until the whole batch is on disk
        await this.file!.appendFile(data); // loops until all is written, unlike write()
        if (durableBatch(batch)) await this.file!.datasync();
        this.torn = false;
        this.size += Buffer.byteLength(data);
      } catch (e) {
        err = e as Error;
        this.torn = true;
      }
      for (const q of batch) q.done(err);
    }
    this.flushing = null;
  }

  /** Replaces the journal with one holding only the pending results, durably, and appends to it from then on. */
  private async rewrite(): Promise<void> {
    const data = [...this.puts.values()].join('');
    const tmp = `${this.path}.new`;
    // The whole dir may be gone (an operator's clean-up): made again, results stay durable.
    await mkdir(this.dir, { recursive: true });
    await writeSynced(tmp, data, 'w');
    await rename(tmp, this.path);
    await syncDir(this.dir);
    await this.file?.close().catch(() => {});
    this.file = await open(this.path, 'a', 0o600);
    this.ino = (await this.file.stat()).ino;
    this.size = Buffer.byteLength(data);
  }
}

interface OutboxContents {
  /** The put line of each pending result, by key, oldest first. */
  puts: Map<string, string>;
  /** Result files of older releases, read into `puts`. */
  legacy: string[];
  /** Result files of older releases that do not parse. */
  unreadable: string[];
  /** What a crash left: temp files of older releases, a compaction's `journal.new`. */
  leftovers: string[];
  /** The journal's text when a line of it (not the torn last one) did not parse; else null. */
  corruptJournal: string | null;
}

/** What the outbox dir holds, read without changing anything. */
async function readOutbox(dir: string): Promise<OutboxContents> {
  const found: OutboxContents = { puts: new Map(), legacy: [], unreadable: [], leftovers: [], corruptJournal: null };
  for (const name of (await readdir(dir)).sort()) {
    const path = join(dir, name);
    if (name.endsWith('.tmp') || name === 'journal.new') {
      found.leftovers.push(path);
    } else if (name.endsWith('.json')) {
      try {
        const r = JSON.parse(await readFile(path, 'utf8')) as PendingResult;
        found.puts.set(keyOf(r.taskId, r.leaseId), `P ${JSON.stringify(r)}\n`);
        found.legacy.push(path);
      } catch {
        found.unreadable.push(path);
      }
    }
  }
  const text = await readFile(join(dir, 'journal'), 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return '';
    throw err;
  });
  const lines = text.split('\n');
  // The last piece is empty after a complete line, or a torn write: never acknowledged.
  lines.pop();
  for (const line of lines) {
    try {
      if (line.startsWith('P ')) {
        const r = JSON.parse(line.slice(2)) as PendingResult;
        if (typeof r.taskId !== 'string' || typeof r.leaseId !== 'string') throw new Error('not a result');
        found.puts.delete(keyOf(r.taskId, r.leaseId)); // a put again moves to the end
        found.puts.set(keyOf(r.taskId, r.leaseId), `${line}\n`);
      } else if (line.startsWith('A ')) {
        const [taskId, leaseId] = JSON.parse(line.slice(2)) as [string, string];
        found.puts.delete(keyOf(taskId, leaseId));
      } else {
        throw new Error('unknown line');
      }
    } catch {
      found.corruptJournal = text;
    }
  }
  return found;
}

/**
 * The results an outbox holds, as the worker on `workDir` would send them at its next start:
 * read only, safe beside a running worker (for tools and tests that look into a work dir).
 */
export async function pendingInOutbox(workDir: string): Promise<PendingResult[]> {
  const { puts } = await readOutbox(join(workDir, 'outbox'));
  return [...puts.values()].map(parsePut);
}

