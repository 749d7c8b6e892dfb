/**
 * The durable result outbox. A finished result is written and fsynced here while it is sent
 * (the daemon does not wait for the write; see startTask there), and forgotten only when the
 * manager acks it, so neither a manager outage nor a worker crash loses finished work.
 *
 * It also keeps the running records: which leases this worker runs, and each one's process,
 * so that the next start after a crash can kill what is left and hand those leases back.
 *
 * One append-only journal, `outbox/journal`: a line `P <result JSON>` puts a result, a line
 * `A <[taskId, leaseId] JSON>` forgets one; `R <record JSON>` starts a run, `E <[taskId,
 * leaseId] JSON>` ends one. Lines written in the same event-loop turn go out in one write, with
 * one fdatasync when any of them is a put (run lines need none: a machine crash ends the runs
 * too). Why: a file per result cost a temp file, two fsyncs, a rename and, on the ack, a
 * removal, and a file per running record three round trips more: ~14 thread-pool round trips
 * per task, the largest share of a worker's CPU for short tasks (docs/benchmarks.md), and two
 * fsyncs per task on a VM's standard disk, where each takes milliseconds.
 *
 * Crash safety: a put is acknowledged (its promise resolves) only after the fdatasync that
 * covers it. A crash mid-write leaves a torn last line, which is skipped. Anything else that
 * cannot be read is kept aside for a human and reported by open(), never overwritten. The
 * journal is rewritten with only the results still pending and the runs not ended (temp file,
 * fsync, rename, directory fsync) at open, after a failed write, and once it is mostly
 * forgotten lines.
 *
 * Results of older releases, one file per result (`<taskId>.<leaseId>.json`), are read at open,
 * folded into the journal and then deleted.
 *
 * A journal that cannot be written (a full disk) does not stop the worker from starting: puts
 * fail (the daemon sends those results all the same and keeps them in memory) until a later
 * write can make the journal. One that cannot be read does, unless it can be renamed aside:
 * a rewrite would replace it, and the results in it, with what is in memory.
 */
import { copyFile, link, lstat, mkdir, open, readdir, readFile, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { ExecutionReport } from '@pullman/protocol';
import { syncDir, writeSynced } from './durable.js';

/** A run of a task, kept while it runs (see the header). */
export interface RunningRecord {
  taskId: string;
  leaseId: string;
  /** Missing in records of older workers. */
  attempt?: number;
  pid: number | undefined;
}

export interface PendingResult {
  taskId: string;
  leaseId: string;
  report: ExecutionReport;
}

/**
 * The journal is rewritten when it is past this size and at least twice what is pending: a
 * journal of forgotten lines shrinks, and a long outage's backlog (results with 64 KiB tails,
 * none acked) is not rewritten on every put.
 */
const COMPACT_BYTES = 4 * 1024 * 1024;
/** A rewrite writes in pieces of about this many characters: a backlog may exceed V8's longest string. */
const REWRITE_PIECE_CHARS = 1024 * 1024;

const keyOf = (taskId: string, leaseId: string): string => JSON.stringify([taskId, leaseId]);
const parsePut = (line: string): PendingResult => JSON.parse(line.slice(2)) as PendingResult;
const parseRunLine = (line: string): RunningRecord => JSON.parse(line.slice(2)) as RunningRecord;
/** A batch with a put is fdatasynced; one of other lines only is not (see remove(), started()). */
const durableBatch = (batch: readonly Queued[]): boolean => batch.some((q) => q.key !== null);
const sameFile = (a: { dev: bigint; ino: bigint }, b: { dev: bigint; ino: bigint }): boolean => a.dev === b.dev && a.ino === b.ino;

interface Queued {
  line: string;
  /** The put's key, for a put line; null for any other. */
  key: string | null;
  done: (err: Error | null) => void;
}

/** What open() found: files for a human and a problem (the daemon logs both), and runs to clean up after. */
export interface OutboxOpened {
  /**
   * Files renamed aside, unread or partly read: a journal with lines that do not parse (its
   * readable results are kept), a journal that is not a regular file, result files of an older
   * release that do not parse. Results only in them are not sent.
   */
  keptAside: string[];
  /** Why the outbox cannot store results yet (the journal could not be made); null if it can. */
  problem: Error | null;
  /**
   * Runs a previous process started and did not end (it crashed): their processes may still
   * run. They stay in the journal until the caller ends them, once it has dealt with them (the
   * daemon: when the manager acks their release or result), so that a crash meanwhile finds
   * them again at the next start.
   */
  running: RunningRecord[];
}

export class Outbox {
  readonly dir: string;
  private readonly path: string;
  private file: FileHandle | null = null;
  /** What the journal holds: the put line of each pending result, by key, oldest first. */
  private readonly puts = new Map<string, string>();
  /** ... and the run line of each run not ended, by key. */
  private readonly runs = new Map<string, string>();
  /** The bytes of the lines in `puts` and `runs`: what a rewrite would write. */
  private live = 0;
  private queue: Queued[] = [];
  private flushing: Promise<void> | null = null;
  private size = 0;
  /**
   * The journal must be rewritten before anything is appended: it is not made yet, or a write or
   * fdatasync failed (a full disk) and it may end in part of a line, which a line appended to it
   * would be glued to and lost with at the next read, fsynced or not.
   */
  private torn = true;
  /** The open journal's device and inode: the path must still name it for an append to count. */
  private id: { dev: bigint; ino: bigint } | null = null;

  constructor(workDir: string) {
    this.dir = join(workDir, 'outbox');
    this.path = join(this.dir, 'journal');
  }

  /**
   * Reads what is pending (journal and older files), and starts a journal holding just that.
   * Rejects when the outbox dir cannot be made or listed, or a journal it cannot read cannot be
   * renamed aside; a journal that cannot be written is returned as `problem`.
   */
  async open(): Promise<OutboxOpened> {
    await mkdir(this.dir, { recursive: true });
    const found = await readOutbox(this.dir);
    for (const path of found.leftovers) await rm(path, { force: true }).catch(() => {});
    const keptAside: string[] = [];
    for (const { from, to, how } of found.aside) {
      if (how === 'rename') {
        // Unread: renamed, so no rewrite replaces it. Failing that, nothing may go on.
        const renamed = await rename(from, to).then(() => true, (err: NodeJS.ErrnoException) => {
          if (from === this.path) throw new Error(`outbox journal ${from} cannot be read, nor renamed aside: ${err.message}`);
          return false; // an older release's file: no rewrite touches it
        });
        if (renamed) keptAside.push(to);
      } else if (await link(from, to).catch(() => copyFile(from, to)).then(() => true, () => false)) {
        // Read, with lines that do not parse: its readable results go into the new journal, and
        // a second name keeps it as it was (a hard link needs no space) for a human.
        keptAside.push(to);
      }
    }
    for (const [key, line] of found.puts) this.setLine(this.puts, key, line);
    const running = [...found.runs.values()].map(parseRunLine);
    for (const [key, line] of found.runs) this.setLine(this.runs, key, line);
    let problem: Error | null = null;
    try {
      await this.rewrite();
      // Only now that the journal holds them: a crash before this reads them again.
      for (const path of found.legacy) await rm(path, { force: true });
    } catch (err) {
      // The journal as it was (if any) is untouched and holds the same results; puts fail and
      // retry the rewrite until it succeeds.
      problem = err as Error;
    }
    return { keptAside, problem, running };
  }

  /** Writes a result durably: resolves once it is on disk. A second put of the same lease replaces the first. */
  put(result: PendingResult): Promise<void> {
    const key = keyOf(result.taskId, result.leaseId);
    const line = `P ${JSON.stringify(result)}\n`;
    this.setLine(this.puts, key, line);
    return this.append(line, key);
  }

  /**
   * Forgets a result the manager acknowledged (recorded or stale). Not fsynced: lost in a
   * crash, the result is only sent again, and the manager answers it `stale`.
   */
  async remove(taskId: string, leaseId: string): Promise<void> {
    if (!this.deleteLine(this.puts, keyOf(taskId, leaseId))) return;
    await this.append(`A ${JSON.stringify([taskId, leaseId])}\n`, null);
  }

  /**
   * Records a run (its process has started). Not fsynced; resolves once written. By lease, not
   * by task: a failed run ends only once its result is written, and by then the retry of the
   * same task may run here under a new lease.
   */
  started(record: RunningRecord): Promise<void> {
    const line = `R ${JSON.stringify(record)}\n`;
    this.setLine(this.runs, keyOf(record.taskId, record.leaseId), line);
    return this.append(line, null);
  }

  /** Ends a run (its result is written, or it was released). Not fsynced. */
  async ended(taskId: string, leaseId: string): Promise<void> {
    if (!this.deleteLine(this.runs, keyOf(taskId, leaseId))) return;
    await this.append(`E ${JSON.stringify([taskId, leaseId])}\n`, null);
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

  private setLine(lines: Map<string, string>, key: string, line: string): void {
    this.deleteLine(lines, key); // set again: moves to the end
    lines.set(key, line);
    this.live += Buffer.byteLength(line);
  }

  private deleteLine(lines: Map<string, string>, key: string): boolean {
    const line = lines.get(key);
    if (line === undefined) return false;
    lines.delete(key);
    this.live -= Buffer.byteLength(line);
    return true;
  }

  /** `key` is the put's key, for a put line; null for any other (not fsynced). */
  private append(line: string, key: string | null): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queue.push({ line, key, done: (err) => (err ? reject(err) : resolve()) });
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
        // The batch's own puts are in this.puts already: a rewrite carries them.
        // An outbox dir removed or replaced under the worker (an operator's clean-up): appends
        // would go to a file no name reaches, lost at the next start while acknowledged as
        // stored. The path must still name the open journal, or it is made again.
        const named = durableBatch(batch) ? await stat(this.path, { bigint: true }).then((st) => this.id !== null && sameFile(st, this.id), () => false) : true;
        if (this.torn || !named || (this.size > COMPACT_BYTES && this.size > 2 * this.live)) {
          // Nothing to append after it: the rewrite wrote and fsynced every pending put, this
          // batch's too, and none that this batch forgets.
          await this.rewrite();
        } else {
          const data = batch.map((q) => q.line).join('');
          await this.file!.appendFile(data); // loops until all is written, unlike write()
          if (durableBatch(batch)) await this.file!.datasync();
          this.size += Buffer.byteLength(data);
        }
      } catch (e) {
        err = e as Error;
        this.torn = true;
        // Reported as not stored, so not kept either: a later rewrite would store what the
        // daemon counts as held in memory only (unless a later put of the lease replaced it).
        for (const q of batch) if (q.key !== null && this.puts.get(q.key) === q.line) this.deleteLine(this.puts, q.key);
      }
      for (const q of batch) q.done(err);
    }
    this.flushing = null;
  }

  /** Replaces the journal with one holding only the runs and pending results, durably, and appends to it from then on. */
  private async rewrite(): Promise<void> {
    // The whole dir may be gone (an operator's clean-up): made again, and its name made durable.
    if ((await mkdir(this.dir, { recursive: true })) !== undefined) await syncDir(dirname(this.dir));
    const tmp = `${this.path}.new`;
    // Whatever is there is a crash's leftover: 'wx' then neither follows a symlink nor opens a FIFO.
    await rm(tmp, { force: true });
    try {
      await writeSynced(tmp, inPieces([...this.runs.values(), ...this.puts.values()]), 'wx');
    } catch (err) {
      await rm(tmp, { force: true }).catch(() => {});
      throw err;
    }
    await rename(tmp, this.path);
    await syncDir(this.dir);
    await this.file?.close().catch(() => {});
    this.file = await open(this.path, 'a', 0o600);
    this.id = await this.file.stat({ bigint: true });
    this.size = this.live; // what it wrote
    this.torn = false;
  }
}

/** `lines` joined into pieces of about REWRITE_PIECE_CHARS characters. */
function* inPieces(lines: readonly string[]): Generator<string> {
  let piece: string[] = [];
  let bytes = 0;
  for (const line of lines) {
    piece.push(line);
    bytes += line.length;
    if (bytes >= REWRITE_PIECE_CHARS) {
      yield piece.join('');
      piece = [];
      bytes = 0;
    }
  }
  if (piece.length > 0) yield piece.join('');
}

interface OutboxContents {
  /** The put line of each pending result, by key, oldest first. */
  puts: Map<string, string>;
  /** The run line of each run not ended, by key. */
  runs: Map<string, string>;
  /** Result files of older releases, read into `puts`. */
  legacy: string[];
  /** Files a human should look at, the names to keep them under, and how (see open()). */
  aside: Array<{ from: string; to: string; how: 'rename' | 'link' }>;
  /** What a crash left: temp files of older releases, a rewrite's `journal.new`. */
  leftovers: string[];
}

function parseKey(json: string): [string, string] {
  const key = JSON.parse(json) as unknown;
  if (!Array.isArray(key) || typeof key[0] !== 'string' || typeof key[1] !== 'string') throw new Error('not a key');
  return [key[0], key[1]];
}

/** A run as the outbox stores it (or an older worker did, one file each), or null. */
export function parseRun(json: string): RunningRecord | null {
  const r = JSON.parse(json) as Partial<RunningRecord> | null;
  const ok = typeof r?.taskId === 'string' && typeof r.leaseId === 'string' && (r.pid === undefined || Number.isInteger(r.pid)) && (r.attempt === undefined || Number.isInteger(r.attempt));
  return ok ? (r as RunningRecord) : null;
}

/** A result as the outbox stores it, or null. */
function parseResult(json: string): PendingResult | null {
  const r = JSON.parse(json) as Partial<PendingResult> | null;
  return typeof r?.taskId === 'string' && typeof r.leaseId === 'string' && typeof r.report === 'object' && r.report !== null ? (r as PendingResult) : null;
}

/** What the outbox dir holds, read without changing anything. */
async function readOutbox(dir: string): Promise<OutboxContents> {
  const found: OutboxContents = { puts: new Map(), runs: new Map(), legacy: [], aside: [], leftovers: [] };
  const stamp = Date.now();
  for (const name of (await readdir(dir)).sort()) {
    const path = join(dir, name);
    if (name.endsWith('.tmp') || name === 'journal.new') {
      found.leftovers.push(path);
    } else if (name.endsWith('.json')) {
      const r = await readFile(path, 'utf8').then(parseResult).catch(() => null);
      if (r) {
        found.puts.set(keyOf(r.taskId, r.leaseId), `P ${JSON.stringify(r)}\n`);
        found.legacy.push(path);
      } else {
        found.aside.push({ from: path, to: `${path}.corrupt`, how: 'rename' }); // unreadable despite the rename protocol
      }
    }
  }
  const path = join(dir, 'journal');
  // A FIFO would block the read, a directory or socket fail it, and a symlink is not ours.
  const st = await lstat(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return null;
    throw err;
  });
  if (st === null) return found;
  const text = st.isFile() ? await readFile(path, 'utf8').catch(() => null) : null;
  if (text === null) {
    found.aside.push({ from: path, to: `${path}.unreadable-${stamp}`, how: 'rename' });
    return found;
  }
  const lines = text.split('\n');
  // The last piece is empty after a complete line, or a torn write: never acknowledged.
  lines.pop();
  let corrupt = false;
  for (const line of lines) {
    try {
      if (line.startsWith('P ')) {
        const r = parseResult(line.slice(2));
        if (!r) throw new Error('not a result');
        const key = keyOf(r.taskId, r.leaseId);
        found.puts.delete(key); // a put again moves to the end
        found.puts.set(key, `${line}\n`);
      } else if (line.startsWith('A ') || line.startsWith('E ')) {
        const [taskId, leaseId] = parseKey(line.slice(2));
        (line.startsWith('A ') ? found.puts : found.runs).delete(keyOf(taskId, leaseId));
      } else if (line.startsWith('R ')) {
        const r = parseRun(line.slice(2));
        if (!r) throw new Error('not a run');
        found.runs.set(keyOf(r.taskId, r.leaseId), `${line}\n`);
      } else {
        throw new Error('unknown line');
      }
    } catch {
      corrupt = true;
    }
  }
  if (corrupt) found.aside.push({ from: path, to: `${path}.corrupt-${stamp}`, how: 'link' });
  return found;
}

/**
 * The results an outbox holds, as the worker on `workDir` would send them at its next start,
 * and its runs not ended: read only, safe beside a running worker (for tools and tests that
 * look into a work dir).
 */
export async function readOutboxOf(workDir: string): Promise<{ pending: PendingResult[]; running: RunningRecord[] }> {
  const { puts, runs } = await readOutbox(join(workDir, 'outbox'));
  return { pending: [...puts.values()].map(parsePut), running: [...runs.values()].map(parseRunLine) };
}
