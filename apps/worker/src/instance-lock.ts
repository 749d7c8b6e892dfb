/**
 * One worker daemon per work dir.
 *
 * Why: two daemons on one work dir (a second one started by hand while systemd runs the first,
 * say) read one worker id, so the manager replaces their sessions in turn (close 4409); each
 * re-sends the other's results from the shared outbox and takes the other's running records for
 * orphans of a crash. Refusing the second one at its start is the only safe answer.
 *
 * The lock is a Unix socket in Linux's abstract namespace. Binding it is atomic, and the kernel
 * frees it the moment its process dies, however it dies: no file is left behind to judge stale.
 * Its name is a hash of a random key kept in the work dir (`lock-key`, mode 0600), so every path
 * to the dir names one lock. Socket names are public (/proc/net/unix), so a name found taken is
 * not proof of a worker: the holder must answer a challenge with the key. One that answers
 * wrongly is a stranger squatting the name, and the worker runs without the lock, warning,
 * instead of being kept from starting by any local user. One that does not answer at all may be
 * a worker stopped in a terminal (Ctrl-Z) or stuck: that counts as busy, since two workers on
 * one dir cost more than a worker that does not start and says why. One that is gone by the
 * time it is asked (it exited meanwhile) frees the name: the bind is tried again.
 *
 * Tried first and lost (docs/reliability.md): a socket file in the work dir (replacing a dead
 * holder's file let two workers started together both win, and a holder under another uid
 * looked dead); a name made of the dir's device and inode (anyone could take it first, and
 * inodes past 2^53 rounded to one name for two dirs); the key itself as the name (public).
 * Scope: one network namespace. Two containers with networks of their own sharing a work dir,
 * or two hosts sharing one over NFS, are not stopped by it, and deleting the work dir under a
 * running worker makes a new key, and so a new lock.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { link, readdir, readFile, stat, unlink } from 'node:fs/promises';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { syncDir, writeSynced } from './durable.js';

/** The key's file name in the work dir. */
export const KEY_FILE = 'lock-key';

const KEY = /^[0-9a-f]{32}$/;

/** How long a holder has to answer a challenge, and a challenger to send one. */
const ANSWER_TIMEOUT_MS = 5_000;

/** Challenges answered at once; more are refused (nothing but a contender should connect). */
const MAX_CHALLENGES = 4;

/** Binds tried when the holder is gone by the time it is challenged. */
const BIND_ATTEMPTS = 3;

/** Temporary key files older than this were left by a worker killed while making the key. */
const STALE_TEMP_MS = 60_000;

/** Another live worker holds this work dir. */
export class WorkDirBusyError extends Error {
  override readonly name = 'WorkDirBusyError';
}

export interface WorkDirLock {
  /** Stops listening (a normal exit); the kernel does the same at any other. */
  release(): Promise<void>;
}

/**
 * The work dir's key, made on first use. Workers making it at once agree: each writes a whole
 * key to a file of its own (fsynced, so a crash cannot leave an empty one) and links it into
 * place, and the one whose link finds the name taken reads the winner's.
 */
export async function lockKey(workDir: string): Promise<string> {
  const path = join(workDir, KEY_FILE);
  let key = await readKey(path);
  if (key === null) {
    const tmp = join(workDir, `.${KEY_FILE}.${process.pid}.${randomBytes(4).toString('hex')}`);
    try {
      await writeSynced(tmp, `${randomBytes(16).toString('hex')}\n`, 'wx');
      await link(tmp, path).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err;
      });
      await syncDir(workDir);
    } finally {
      await unlink(tmp).catch(() => {});
    }
    key = await readKey(path);
  }
  if (key === null || !KEY.test(key)) throw new Error(`${path} does not hold a lock key (32 hex digits); stop every worker on this dir, delete it and start again`);
  return key;
}

/** The lock's socket name for a key: a hash, so that the public name does not give the key away. */
export function lockName(key: string): string {
  return `\0pullman-worker:${createHash('sha256').update(`pullman-worker-lock:${key}`).digest('hex').slice(0, 32)}`;
}

/**
 * Takes the work dir's lock, or throws WorkDirBusyError naming the work dir. Where no lock can
 * be made (no such dir yet, a file system without hard links, a system without abstract
 * sockets, a name taken by a process that does not know the key), `onUnavailable` hears why and
 * the worker runs without one: a work dir it cannot use stops it later with its own error.
 */
export async function lockWorkDir(workDir: string, onUnavailable: (why: string) => void): Promise<WorkDirLock> {
  let key: string;
  try {
    key = await lockKey(workDir);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    onUnavailable(e.code ? `cannot make ${join(workDir, KEY_FILE)}: ${e.code}` : e.message);
    return { release: async () => {} };
  }
  const name = lockName(key);
  for (let attempt = 1; ; attempt++) {
    const open = new Set<Socket>();
    const server = createServer((socket) => answer(socket, key, open));
    server.maxConnections = MAX_CHALLENGES;
    try {
      await listen(server, name);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EADDRINUSE') {
        onUnavailable(`an abstract socket for ${workDir}: ${code ?? String(err)}`);
        return { release: async () => {} };
      }
      const holder = await challenge(name, key);
      if (holder === 'gone' && attempt < BIND_ATTEMPTS) continue; // it exited meanwhile: bind again
      if (holder === 'stranger') {
        onUnavailable(`the lock for ${workDir} is held by a process that does not know its key (not a pullman-worker on this dir)`);
        return { release: async () => {} };
      }
      throw new WorkDirBusyError(
        holder === 'silent'
          ? `a process holds the lock for the work dir ${workDir} and does not answer (a pullman-worker stopped or stuck?); stop it first, or give this one a PULLMAN_WORK_DIR of its own`
          : `another pullman-worker is running with the work dir ${workDir}; stop it first, or give this one a PULLMAN_WORK_DIR of its own`,
      );
    }
    server.unref(); // the lock never keeps the process alive
    await removeStaleTemps(workDir);
    return {
      release: () =>
        new Promise<void>((resolve) => {
          server.close(() => resolve());
          for (const socket of open) socket.destroy(); // or close() waits for them
        }),
    };
  }
}

/**
 * The holder's side: reads a challenge line and answers it with the key, then hangs up. Each
 * connection has one deadline in all, not an idle timeout, and does not keep the process alive.
 */
function answer(socket: Socket, key: string, open: Set<Socket>): void {
  open.add(socket);
  socket.unref();
  const deadline = setTimeout(() => socket.destroy(), ANSWER_TIMEOUT_MS);
  deadline.unref();
  socket.on('close', () => {
    clearTimeout(deadline);
    open.delete(socket);
  });
  socket.on('error', () => {});
  let line = '';
  socket.on('data', (chunk: Buffer) => {
    line += chunk.toString('latin1');
    if (line.length > 64) return socket.destroy();
    const end = line.indexOf('\n');
    if (end < 0) return;
    socket.end(`${proof(key, line.slice(0, end))}\n`);
  });
}

/**
 * Who listens on `name`: a worker that knows this key, a stranger that answers otherwise, one
 * that accepts and never answers (`silent`), or nobody any more (`gone`: refused, or hung up
 * without a word).
 */
function challenge(name: string, key: string): Promise<'worker' | 'stranger' | 'silent' | 'gone'> {
  const nonce = randomBytes(16).toString('hex');
  const expected = Buffer.from(proof(key, nonce));
  return new Promise((resolve) => {
    let reply = '';
    let settled = false;
    const socket = createConnection(name);
    const done = (who: 'worker' | 'stranger' | 'silent' | 'gone') => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(who);
    };
    const timer = setTimeout(() => done('silent'), ANSWER_TIMEOUT_MS);
    socket.on('connect', () => socket.write(`${nonce}\n`));
    socket.on('data', (chunk: Buffer) => {
      reply += chunk.toString('latin1');
      const end = reply.indexOf('\n');
      if (end < 0) return reply.length > 128 ? done('stranger') : undefined;
      const got = Buffer.from(reply.slice(0, end));
      done(got.length === expected.length && timingSafeEqual(got, expected) ? 'worker' : 'stranger');
    });
    socket.on('error', () => done('gone'));
    socket.on('end', () => done(reply.length > 0 ? 'stranger' : 'gone'));
  });
}

function proof(key: string, challenge: string): string {
  return createHmac('sha256', key).update(challenge).digest('hex');
}

async function readKey(path: string): Promise<string | null> {
  try {
    return (await readFile(path, 'utf8')).trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/** Temporary key files a worker killed half-way left behind. Only old ones: a new one may be a starting worker's. */
async function removeStaleTemps(workDir: string): Promise<void> {
  const names = await readdir(workDir).catch(() => [] as string[]);
  for (const name of names) {
    if (!name.startsWith(`.${KEY_FILE}.`)) continue;
    const path = join(workDir, name);
    const age = await stat(path).then((s) => Date.now() - s.mtimeMs, () => 0);
    if (age > STALE_TEMP_MS) await unlink(path).catch(() => {});
  }
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
