/**
 * One worker daemon per work dir.
 *
 * Why: two daemons on one work dir (a second one started by hand while systemd runs the first,
 * say) read one worker id, so the manager replaces their sessions in turn (close 4409); each
 * re-sends the other's results from the shared outbox and takes the other's running records for
 * orphans of a crash. Refusing the second one at its start is the only safe answer.
 *
 * The lock is a Unix socket in Linux's abstract namespace named after a random key kept in the
 * work dir (`lock-key`, readable by the worker's user only), so every path to the dir names one
 * lock. Binding it is atomic, and the kernel frees it the moment its process dies, however it
 * dies: no file is left behind to judge stale. What was tried first and lost:
 * - a socket file in the work dir: replacing a dead holder's file (connect, unlink, listen) let
 *   two workers started together both win, and a holder under another uid looked dead (EACCES);
 * - a name made of the dir's device and inode: anyone who can stat the dir could bind it first
 *   and keep the worker from starting, and inodes past 2^53 (overlayfs with xino, some NFS)
 *   rounded to one name for two dirs.
 * Its scope is one network namespace: two containers with networks of their own sharing a work
 * dir, or two hosts sharing one over NFS, are not stopped by it. Deleting the work dir under a
 * running worker makes a new key, and so a new lock.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:net';
import { link, readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** The key's file name in the work dir. */
export const KEY_FILE = 'lock-key';

const KEY = /^[0-9a-f]{32}$/;

/** Another live worker holds this work dir. */
export class WorkDirBusyError extends Error {
  override readonly name = 'WorkDirBusyError';
}

export interface WorkDirLock {
  /** Stops listening (a normal exit); the kernel does the same at any other. */
  release(): Promise<void>;
}

/**
 * The lock's name for a work dir: its key, made on first use. Two workers making it at once
 * agree: each writes a whole key to a file of its own and links it into place, and the one
 * whose link finds the name taken reads the winner's.
 */
export async function lockName(workDir: string): Promise<string> {
  const path = join(workDir, KEY_FILE);
  let key = await readKey(path);
  if (key === null) {
    const tmp = join(workDir, `.${KEY_FILE}.${process.pid}.${randomBytes(4).toString('hex')}`);
    await writeFile(tmp, `${randomBytes(16).toString('hex')}\n`, { mode: 0o600 });
    try {
      await link(tmp, path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    } finally {
      await unlink(tmp).catch(() => {});
    }
    key = await readKey(path);
  }
  if (key === null || !KEY.test(key)) throw new Error(`${path} does not hold a lock key (32 hex digits); delete it and start again`);
  return `\0pullman-worker:${key}`;
}

async function readKey(path: string): Promise<string | null> {
  try {
    return (await readFile(path, 'utf8')).trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/**
 * Takes the work dir's lock, or throws WorkDirBusyError naming the work dir. Where no lock can
 * be made (no such dir yet, a system without abstract sockets), `onUnavailable` hears why and
 * the worker runs without one: a work dir it cannot use stops it later with its own error.
 */
export async function lockWorkDir(workDir: string, onUnavailable: (why: string) => void): Promise<WorkDirLock> {
  let name: string;
  try {
    name = await lockName(workDir);
  } catch (err) {
    onUnavailable(`${workDir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    return { release: async () => {} };
  }
  // Nobody connects: holding the name is the whole point, so a connection is closed at once.
  const server = createServer((socket) => socket.destroy());
  try {
    await listen(server, name);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') {
      throw new WorkDirBusyError(`another pullman-worker is running with the work dir ${workDir}; stop it first, or give this one a PULLMAN_WORK_DIR of its own`);
    }
    onUnavailable(`an abstract socket for ${workDir}: ${code ?? String(err)}`);
    return { release: async () => {} };
  }
  server.unref(); // the lock never keeps the process alive
  return { release: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

function listen(server: Server, name: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(name, () => {
      server.off('error', reject);
      resolve();
    });
  });
}
