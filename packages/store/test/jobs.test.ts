import { describe, expect, it } from 'vitest';
import { PullmanError, type TaskSpec } from '@pullman/protocol';
import { failed, jobSeq, lease, openStore, report, session, T0 } from './helpers.js';

const sh = (key: string | undefined, over: Partial<TaskSpec> = {}): TaskSpec => ({ ...(key === undefined ? {} : { key }), shell: 'true', ...over });

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(PullmanError);
    return (err as PullmanError).code;
  }
  throw new Error('expected a PullmanError');
}

describe('createJob and submitTasks', () => {
  it('creates a sealed job with its tasks', () => {
    const { store } = openStore();
    const out = store.createJob({ name: 'sweep', tasks: [sh('a'), sh('b'), sh(undefined)] });
    expect(out.accepted).toBe(3);
    expect(out.duplicates).toBe(0);
    expect(out.job).toEqual({
      id: 'job-1', name: 'sweep', state: 'active', sealed: true, createdAt: new Date(T0).toISOString(), finishedAt: null,
      counts: { queued: 3, running: 0, succeeded: 0, failed: 0, cancelled: 0, total: 3 },
    });
    expect(store.getTask(3)!.key).toBeNull();
  });

  it('stores priority, slots and the spec of each task', () => {
    const { store } = openStore();
    const spec = sh('a', { priority: 7, slots: 3, retries: 2, requires: ['gpu'], meta: { seed: 17 } });
    store.createJob({ tasks: [spec] });
    const task = store.getTask(1)!;
    expect(task).toMatchObject({ id: 'task-1', jobId: 'job-1', key: 'a', state: 'queued', priority: 7, slots: 3, attempts: 0, spec, result: null, workerId: null, history: [] });
  });

  it('counts a resubmitted key as a duplicate and changes nothing', () => {
    const { store } = openStore();
    const { job } = store.createJob({ open: true, tasks: [sh('a', { priority: 1 }), sh('b')] });
    const before = store.getTask(1)!;
    const out = store.submitTasks(jobSeq(job.id), [sh('a', { priority: 99, shell: 'other' }), sh('b'), sh('c')]);
    expect(out).toEqual({ accepted: 1, duplicates: 2, handed: [] });
    expect(store.getTask(1)).toEqual(before);
    expect(store.getJob(1)!.counts.total).toBe(3);
    expect(store.submitTasks(jobSeq(job.id), [sh('a'), sh('b'), sh('c')])).toEqual({ accepted: 0, duplicates: 3, handed: [] });
    expect(store.getJob(1)!.counts.total).toBe(3);
  });

  it('counts duplicates within one submission', () => {
    const { store } = openStore();
    const out = store.createJob({ tasks: [sh('a'), sh('a'), sh('b'), sh('a')] });
    expect(out).toMatchObject({ accepted: 2, duplicates: 2 });
  });

  it('never treats tasks without a key as duplicates', () => {
    const { store } = openStore();
    const out = store.createJob({ tasks: [sh(undefined), sh(undefined), sh(undefined)] });
    expect(out).toMatchObject({ accepted: 3, duplicates: 0 });
  });

  it('does not count a key as duplicate after the task finished', () => {
    const { store } = openStore();
    const { job } = store.createJob({ open: true, tasks: [sh('a')] });
    const [a] = store.claimTasks(session(), [], 1);
    store.completeTask('w-1', lease(a!), report());
    expect(store.submitTasks(jobSeq(job.id), [sh('a')])).toEqual({ accepted: 0, duplicates: 1, handed: [] });
    expect(store.getTask(1)!.state).toBe('succeeded');
  });

  it('keeps keys per job', () => {
    const { store } = openStore();
    const j1 = store.createJob({ tasks: [sh('a'), sh('b')] });
    const j2 = store.createJob({ open: true, tasks: [sh('a')] });
    expect(j2).toMatchObject({ accepted: 1, duplicates: 0 });
    expect(store.submitTasks(jobSeq(j2.job.id), [sh('b')])).toEqual({ accepted: 1, duplicates: 0, handed: [] });
    expect(store.getJob(jobSeq(j1.job.id))!.counts.total).toBe(2);
    expect(store.getJob(jobSeq(j2.job.id))!.counts.total).toBe(2);
  });

  it('refuses tasks for a sealed job with JOB_SEALED and adds nothing', () => {
    const { store } = openStore();
    const { job } = store.createJob({ tasks: [sh('a')] });
    expect(codeOf(() => store.submitTasks(jobSeq(job.id), [sh('b')]))).toBe('JOB_SEALED');
    const open = store.createJob({ open: true });
    store.sealJob(jobSeq(open.job.id));
    expect(codeOf(() => store.submitTasks(jobSeq(open.job.id), [sh('b')]))).toBe('JOB_SEALED');
    expect(store.db.prepare('SELECT count(*) AS n FROM tasks').get()).toEqual({ n: 1 });
  });

  it('answers JOB_NOT_FOUND for an unknown job', () => {
    const { store } = openStore();
    expect(codeOf(() => store.submitTasks(42, [sh('a')]))).toBe('JOB_NOT_FOUND');
    expect(codeOf(() => store.sealJob(42))).toBe('JOB_NOT_FOUND');
    expect(codeOf(() => store.cancelJob(42))).toBe('JOB_NOT_FOUND');
    expect(codeOf(() => store.retryJob(42))).toBe('JOB_NOT_FOUND');
    expect(codeOf(() => store.listTasks(42, { limit: 10 }))).toBe('JOB_NOT_FOUND');
    expect(codeOf(() => store.submissionDefaults(42))).toBe('JOB_NOT_FOUND');
    expect(codeOf(() => store.cancelTask(42))).toBe('TASK_NOT_FOUND');
    expect(store.getJob(42)).toBeNull();
    expect(store.getTask(42)).toBeNull();
    expect(store.db.prepare('SELECT count(*) AS n FROM tasks').get()).toEqual({ n: 0 });
  });

  it('stores job defaults for later submissions', () => {
    const { store } = openStore();
    const { job } = store.createJob({ open: true, defaults: { env: { A: '1' }, retries: 2 } });
    expect(store.submissionDefaults(jobSeq(job.id))).toEqual({ env: { A: '1' }, retries: 2 });
    expect(store.submissionDefaults(jobSeq(store.createJob({ open: true }).job.id))).toBeUndefined();
    expect(codeOf(() => store.submissionDefaults(jobSeq(store.createJob({}).job.id)))).toBe('JOB_SEALED');
  });

  it('rolls back the whole operation when it throws inside a batch transaction', () => {
    const { store } = openStore();
    const { job } = store.createJob({ open: true });
    const sealed = store.createJob({ tasks: [sh('x')] });
    store.transaction(() => {
      store.submitTasks(jobSeq(job.id), [sh('a')]);
      expect(() => store.submitTasks(jobSeq(sealed.job.id), [sh('b')])).toThrow(PullmanError);
      store.submitTasks(jobSeq(job.id), [sh('c')]);
    });
    expect(store.getJob(jobSeq(job.id))!.counts.queued).toBe(2);
    expect(store.getJob(jobSeq(sealed.job.id))!.counts.queued).toBe(1);
  });
});

describe('job state', () => {
  it('an empty sealed job is succeeded at once', () => {
    const { store } = openStore();
    const { job } = store.createJob({ name: 'empty' });
    expect(job).toMatchObject({ state: 'succeeded', sealed: true, finishedAt: new Date(T0).toISOString() });
  });

  it('an empty open job stays active until sealed, then succeeds', () => {
    const { store, clock } = openStore();
    const { job } = store.createJob({ open: true });
    expect(job).toMatchObject({ state: 'active', sealed: false });
    clock.advance(1000);
    expect(store.sealJob(jobSeq(job.id))).toMatchObject({ state: 'succeeded', sealed: true, finishedAt: new Date(T0 + 1000).toISOString() });
  });

  it('a sealed job whose tasks all succeed is succeeded', () => {
    const { store, clock } = openStore();
    const { job } = store.createJob({ tasks: [sh('a'), sh('b')] });
    const [a, b] = store.claimTasks(session(), [], 2);
    store.completeTask('w-1', lease(a!), report());
    expect(store.getJob(1)!.state).toBe('active');
    clock.advance(5000);
    store.completeTask('w-1', lease(b!), report());
    expect(store.getJob(jobSeq(job.id))).toMatchObject({ state: 'succeeded', finishedAt: new Date(T0 + 5000).toISOString(), counts: { succeeded: 2, total: 2 } });
  });

  it('a sealed job with any failed task is failed', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('a'), sh('b'), sh('c')] });
    const [a, b, c] = store.claimTasks(session(), [], 3);
    store.completeTask('w-1', lease(a!), report());
    store.failTask('w-1', lease(b!), failed());
    expect(store.getJob(1)!.state).toBe('active');
    store.completeTask('w-1', lease(c!), report());
    expect(store.getJob(1)).toMatchObject({ state: 'failed', counts: { succeeded: 2, failed: 1 } });
  });

  it('an open job stays active while all its tasks are done, until sealJob', () => {
    const { store } = openStore();
    const { job } = store.createJob({ open: true, tasks: [sh('a')] });
    const [a] = store.claimTasks(session(), [], 1);
    store.completeTask('w-1', lease(a!), report());
    expect(store.getJob(1)!.state).toBe('active');
    store.submitTasks(jobSeq(job.id), [sh('b')]);
    const [b] = store.claimTasks(session(), [], 1);
    store.failTask('w-1', lease(b!), failed());
    expect(store.getJob(1)!.state).toBe('active');
    expect(store.sealJob(1)).toMatchObject({ state: 'failed', sealed: true });
  });

  it('sealing a job with live tasks leaves it active until they end', () => {
    const { store } = openStore();
    store.createJob({ open: true, tasks: [sh('a')] });
    expect(store.sealJob(1)).toMatchObject({ state: 'active', sealed: true });
    const [a] = store.claimTasks(session(), [], 1);
    store.completeTask('w-1', lease(a!), report());
    expect(store.getJob(1)!.state).toBe('succeeded');
    // Sealing again is harmless.
    expect(store.sealJob(1)).toMatchObject({ state: 'succeeded', sealed: true });
  });

  it('counts jobs by state', () => {
    const { store } = openStore();
    store.createJob({});
    store.createJob({ open: true });
    store.createJob({ tasks: [sh('a')] });
    store.cancelJob(3);
    expect(store.jobCounts()).toEqual({ active: 1, succeeded: 1, failed: 0, cancelled: 1 });
  });
});
