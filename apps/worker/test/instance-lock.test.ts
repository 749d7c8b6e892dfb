/**
 * One worker per work dir: the lock is an abstract Unix socket named after a key kept in the
 * work dir, whose holder proves it knows the key, freed by the kernel however its holder dies
 * (instance-lock.ts). Real sockets, files and child processes, no stand-ins.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { KEY_FILE, WorkDirBusyError, lockKey, lockName, lockWorkDir } from '../src/instance-lock.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const workDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'pullman-lock-'));
  dirs.push(d);
  return d;
};
const noWarning = (why: string) => {
  throw new Error(`unexpected: ${why}`);
};

/** Another process: a worker's lock (through this module), or a stranger bound to the name. */
async function holder(script: string) {
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'], cwd: resolve(__dirname, '..') });
  await once(child.stdout!, 'data');
  return child;
}
const MODULE = JSON.stringify(resolve(__dirname, '../src/instance-lock.ts'));

describe('lockWorkDir', () => {
  it('refuses a second holder while the first lives, under any path to the dir, and is free once released', async () => {
    const dir = workDir();
    const first = await lockWorkDir(dir, noWarning);
    await expect(lockWorkDir(dir, noWarning)).rejects.toThrow(new WorkDirBusyError(`another pullman-worker is running with the work dir ${dir}; stop it first, or give this one a PULLMAN_WORK_DIR of its own`));
    const link = join(workDir(), 'link');
    symlinkSync(dir, link);
    await expect(lockWorkDir(link, noWarning)).rejects.toBeInstanceOf(WorkDirBusyError);
    await expect(lockWorkDir(`${dir}/./`, noWarning)).rejects.toBeInstanceOf(WorkDirBusyError);
    await first.release();
    const again = await lockWorkDir(dir, noWarning);
    await again.release();
  });

  it('goes to exactly one of several takers at once', async () => {
    const dir = workDir();
    const outcomes = await Promise.allSettled(Array.from({ length: 5 }, () => lockWorkDir(dir, noWarning)));
    expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(1);
    for (const o of outcomes) if (o.status === 'rejected') expect(o.reason).toBeInstanceOf(WorkDirBusyError);
    for (const o of outcomes) if (o.status === 'fulfilled') await o.value.release();
  });

  it('is held by another worker process until it is killed with SIGKILL, then free', async () => {
    const dir = workDir();
    const other = await holder(`const m = await import(${MODULE}); await m.lockWorkDir(${JSON.stringify(dir)}, (w) => { throw new Error(w); }); console.log('up'); setInterval(() => {}, 1000);`);
    await expect(lockWorkDir(dir, noWarning)).rejects.toBeInstanceOf(WorkDirBusyError);
    other.kill('SIGKILL');
    await once(other, 'exit');
    const lock = await lockWorkDir(dir, noWarning);
    await lock.release();
  });

  it('counts a holder that does not answer (a worker stopped with Ctrl-Z, say) as busy', async () => {
    const dir = workDir();
    const other = await holder(`const m = await import(${MODULE}); await m.lockWorkDir(${JSON.stringify(dir)}, (w) => { throw new Error(w); }); console.log('up'); setInterval(() => {}, 1000);`);
    try {
      other.kill('SIGSTOP');
      await expect(lockWorkDir(dir, noWarning)).rejects.toThrow(`a process holds the lock for the work dir ${dir} and does not answer`);
    } finally {
      other.kill('SIGKILL');
    }
  });

  it('binds again when the holder is gone by the time it is asked', async () => {
    const dir = workDir();
    const name = lockName(await lockKey(dir));
    // Exits while being challenged: stops listening, then hangs up without a word.
    const dying = await holder(`import { createServer } from 'node:net'; const server = createServer((s) => { server.close(); setTimeout(() => s.destroy(), 50); }); server.listen(${JSON.stringify(name)}, () => console.log('up'));`);
    try {
      const lock = await lockWorkDir(dir, noWarning);
      await expect(lockWorkDir(dir, noWarning)).rejects.toBeInstanceOf(WorkDirBusyError); // this one holds it now
      await lock.release();
    } finally {
      dying.kill('SIGKILL');
    }
  });

  it('runs without the lock, warning, when a stranger holds its name: socket names are public', async () => {
    const dir = workDir();
    const name = lockName(await lockKey(dir));
    // Binds the name (read off /proc/net/unix, say) and answers challenges with nonsense.
    const stranger = await holder(`import { createServer } from 'node:net'; createServer((s) => s.on('data', () => s.end('0'.repeat(64) + '\\n'))).listen(${JSON.stringify(name)}, () => console.log('up'));`);
    try {
      const warnings: string[] = [];
      const lock = await lockWorkDir(dir, (why) => warnings.push(why));
      await lock.release();
      expect(warnings).toEqual([`the lock for ${dir} is held by a process that does not know its key (not a pullman-worker on this dir)`]);
    } finally {
      stranger.kill('SIGKILL');
    }
  });

  it('names each work dir by a key of its own, made once, readable by its owner only, and not shown in the name', async () => {
    const [a, b] = [workDir(), workDir()];
    // Workers starting together on a new dir agree on one key.
    const keys = await Promise.all(Array.from({ length: 5 }, () => lockKey(a)));
    expect(new Set(keys).size).toBe(1);
    expect(keys[0]).toMatch(/^[0-9a-f]{32}$/);
    expect(lockName(keys[0]!)).toMatch(/^\0pullman-worker:[0-9a-f]{32}$/);
    expect(lockName(keys[0]!)).not.toContain(keys[0]);
    expect(await lockKey(b)).not.toBe(keys[0]);
    expect(statSync(join(a, KEY_FILE)).mode & 0o777).toBe(0o600);
    expect(readdirSync(a)).toEqual([KEY_FILE]); // no temporary file left
  });

  it('removes temporary key files a killed worker left, once they are old', async () => {
    const dir = workDir();
    const old = join(dir, `.${KEY_FILE}.123.deadbeef`);
    const fresh = join(dir, `.${KEY_FILE}.456.cafef00d`);
    writeFileSync(old, '');
    writeFileSync(fresh, '');
    utimesSync(old, new Date(Date.now() - 3_600_000), new Date(Date.now() - 3_600_000));
    const lock = await lockWorkDir(dir, noWarning);
    await lock.release();
    expect(readdirSync(dir).sort()).toEqual([`.${KEY_FILE}.456.cafef00d`, KEY_FILE]);
  });

  it('runs without a lock, saying why, where none can be made', async () => {
    const warnings: string[] = [];
    const lock = await lockWorkDir(join(workDir(), 'no-such-dir'), (why) => warnings.push(why));
    await lock.release();
    const edited = workDir();
    writeFileSync(join(edited, KEY_FILE), 'not a key\n');
    const other = await lockWorkDir(edited, (why) => warnings.push(why));
    await other.release();
    expect(warnings).toEqual([expect.stringMatching(/no-such-dir\/lock-key: ENOENT$/), expect.stringContaining('does not hold a lock key (32 hex digits)')]);
  });
});
