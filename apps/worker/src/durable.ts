/**
 * Writes that must survive a crash of the machine, not only of the process: the result outbox
 * (outbox.ts) and the work dir's lock key (instance-lock.ts). Each writes a whole file, fsyncs
 * it, publishes it under its final name (rename or link, the caller's choice) and then fsyncs
 * the directory, so that the name too is on disk. The fsyncs run on libuv's thread pool.
 */
import { open } from 'node:fs/promises';

/**
 * Writes `data` (a string, or pieces written in turn) to a new file at `path` (flag `w` or `wx`)
 * and fsyncs it before closing.
 */
export async function writeSynced(path: string, data: string | Iterable<string>, flag: 'w' | 'wx', mode = 0o600): Promise<void> {
  const file = await open(path, flag, mode);
  try {
    // Each call writes from where the last one ended (the handle's position), until all is written.
    for (const piece of typeof data === 'string' ? [data] : data) await file.writeFile(piece);
    await file.sync();
  } finally {
    await file.close();
  }
}

/** Fsyncs a directory, making the names created, renamed or linked in it durable. */
export async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
