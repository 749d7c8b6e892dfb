/**
 * One worker per work dir: the lock is an abstract Unix socket named after the work dir's
 * identity, freed by the kernel however its holder dies (instance-lock.ts). Real sockets and a
 * real child process, no stand-ins.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { WorkDirBusyError, lockName, lockWorkDir } from '../src/instance-lock.js';

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

  it('is free the moment a holder is killed with SIGKILL', async () => {
    const dir = workDir();
    const name = await lockName(dir);
    const holder = spawn(process.execPath, ['-e', `require('node:net').createServer().listen(${JSON.stringify(name)}, () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
    await once(holder.stdout!, 'data');
    await expect(lockWorkDir(dir, noWarning)).rejects.toBeInstanceOf(WorkDirBusyError);
    holder.kill('SIGKILL');
    await once(holder, 'exit');
    const lock = await lockWorkDir(dir, noWarning);
    await lock.release();
  });

  it('runs without a lock, saying why, where none can be made', async () => {
    const warnings: string[] = [];
    const lock = await lockWorkDir(join(workDir(), 'no-such-dir'), (why) => warnings.push(why));
    await lock.release();
    expect(warnings).toEqual([expect.stringMatching(/no-such-dir: ENOENT$/)]);
  });
});
