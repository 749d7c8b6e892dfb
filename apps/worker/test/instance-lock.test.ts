/**
 * One worker per work dir: the lock is a Unix socket in it, released by the kernel however its
 * holder dies (instance-lock.ts). Real sockets and a real child process, no stand-ins.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { LOCK_NAME, WorkDirBusyError, lockWorkDir } from '../src/instance-lock.js';

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

describe('lockWorkDir', () => {
  it('refuses a second holder while the first lives, and is free again once it is released', async () => {
    const dir = workDir();
    const first = await lockWorkDir(dir, noWarning);
    const second = lockWorkDir(dir, noWarning);
    await expect(second).rejects.toBeInstanceOf(WorkDirBusyError);
    await expect(second).rejects.toThrow(`another pullman-worker is running with the work dir ${dir}`);
    await first.release();
    expect(existsSync(join(dir, LOCK_NAME))).toBe(false);
    const third = await lockWorkDir(dir, noWarning);
    await third.release();
  });

  it('takes over the socket file of a holder killed with SIGKILL', async () => {
    const dir = workDir();
    const path = join(dir, LOCK_NAME);
    const holder = spawn(process.execPath, ['-e', `require('node:net').createServer().listen(${JSON.stringify(path)}, () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
    await once(holder.stdout!, 'data');
    await expect(lockWorkDir(dir, noWarning)).rejects.toBeInstanceOf(WorkDirBusyError); // alive: refused
    holder.kill('SIGKILL');
    await once(holder, 'exit');
    expect(existsSync(path)).toBe(true); // left behind
    const lock = await lockWorkDir(dir, noWarning);
    await lock.release();
  });

  it('runs without a lock, saying why, where none can be made', async () => {
    const warnings: string[] = [];
    const long = join(workDir(), 'x'.repeat(120));
    const lock = await lockWorkDir(long, (why) => warnings.push(why));
    await lock.release();
    const missing = await lockWorkDir(join(workDir(), 'no-such-dir'), (why) => warnings.push(why));
    await missing.release();
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toContain("longer than a Unix socket's 107 bytes");
    expect(warnings[1]).toMatch(/no-such-dir\/worker\.sock: E[A-Z]+$/); // Node reports EACCES here
  });
});
