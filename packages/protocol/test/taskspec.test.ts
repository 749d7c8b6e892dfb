import { describe, expect, it } from 'vitest';
import {
  MAX_JSON_DEPTH,
  PullmanError,
  formatJobId,
  formatTaskId,
  parseJobId,
  jsonDepthWithin,
  parseTaskId,
  resolveTaskSpec,
  taskTimeoutMs,
  type TaskDefaults,
  type TaskSpec,
} from '../src/index.js';

function thrown(fn: () => unknown): PullmanError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(PullmanError);
    return err as PullmanError;
  }
  throw new Error('expected a PullmanError, nothing was thrown');
}

describe('resolveTaskSpec', () => {
  it('returns a copy of the spec when there are no defaults', () => {
    const spec: TaskSpec = { key: 'a', command: ['echo', 'hi'] };
    const out = resolveTaskSpec(spec, undefined, 'tasks[0]');
    expect(out).toEqual(spec);
    expect(out).not.toBe(spec);
  });

  it('merges defaults under the task; the task wins field by field', () => {
    const defaults: TaskDefaults = { shell: 'run.sh', retries: 2, priority: 5, slots: 2, requires: ['gpu'], timeout: '1h', cwd: '/data' };
    const out = resolveTaskSpec({ key: 'k', priority: 9, requires: ['cpu'] }, defaults, 'tasks[0]');
    expect(out).toEqual({ key: 'k', shell: 'run.sh', retries: 2, priority: 9, slots: 2, requires: ['cpu'], timeout: '1h', cwd: '/data' });
  });

  it('merges env key by key, the task overriding shared keys', () => {
    const defaults: TaskDefaults = { env: { A: '1', B: '2' } };
    const out = resolveTaskSpec({ shell: 'x', env: { B: 'task', C: '3' } }, defaults, 'tasks[0]');
    expect(out.env).toEqual({ A: '1', B: 'task', C: '3' });
  });

  it('keeps the defaults env when the task has none, and the task env when defaults have none', () => {
    expect(resolveTaskSpec({ shell: 'x' }, { env: { A: '1' } }, 'w').env).toEqual({ A: '1' });
    expect(resolveTaskSpec({ shell: 'x', env: { B: '2' } }, { retries: 1 }, 'w').env).toEqual({ B: '2' });
  });

  it('does not mutate its inputs', () => {
    const defaults: TaskDefaults = { env: { A: '1' } };
    const spec: TaskSpec = { shell: 'x', env: { B: '2' } };
    resolveTaskSpec(spec, defaults, 'w');
    expect(defaults).toEqual({ env: { A: '1' } });
    expect(spec).toEqual({ shell: 'x', env: { B: '2' } });
  });

  it('takes command or shell from the defaults', () => {
    expect(resolveTaskSpec({ key: 'a' }, { command: ['sim'] }, 'w').command).toEqual(['sim']);
    expect(resolveTaskSpec({ key: 'a' }, { shell: 'sim' }, 'w').shell).toBe('sim');
  });

  it('rejects both command and shell with INVALID_TASK_SPEC, naming where', () => {
    const err = thrown(() => resolveTaskSpec({ command: ['a'], shell: 'a' }, undefined, 'tasks[17]'));
    expect(err.code).toBe('INVALID_TASK_SPEC');
    expect(err.status).toBe(400);
    expect(err.message).toContain('tasks[17]');
    expect(err.message).toContain('both');
  });

  it('rejects both when one comes from the defaults', () => {
    const err = thrown(() => resolveTaskSpec({ shell: 'a' }, { command: ['b'] }, 'line 4052'));
    expect(err.code).toBe('INVALID_TASK_SPEC');
    expect(err.message).toContain('line 4052');
  });

  it('rejects neither command nor shell with INVALID_TASK_SPEC', () => {
    const err = thrown(() => resolveTaskSpec({ key: 'a' }, { retries: 1 }, 'tasks[3]'));
    expect(err.code).toBe('INVALID_TASK_SPEC');
    expect(err.message).toContain('tasks[3]');
    expect(err.message).toContain('neither');
  });

  it('accepts valid timeouts in every spelling', () => {
    for (const timeout of ['500ms', '30s', '5m', '2h', 1000, '1000']) {
      expect(resolveTaskSpec({ shell: 'x', timeout }, undefined, 'w').timeout).toBe(timeout);
    }
  });

  it('rejects a NUL byte anywhere a process would receive it, naming the field', () => {
    const bad = (spec: Partial<TaskSpec>, defaults?: TaskDefaults) => () => resolveTaskSpec(spec as TaskSpec, defaults, 'tasks.3');
    expect(bad({ command: ['echo', 'a\0b'] })).toThrow(/^tasks\.3\.command\.1: contains a NUL byte/);
    expect(bad({ shell: 'echo \0' })).toThrow(/^tasks\.3\.shell: contains a NUL byte/);
    expect(bad({ command: ['true'], cwd: '/tmp/\0' })).toThrow(/^tasks\.3\.cwd: /);
    expect(bad({ command: ['true'] }, { env: { X: 'a\0' } })).toThrow(/^tasks\.3\.env\.X: /);
    expect(bad({ command: ['true'], key: 'k\0' })).toThrow(/^tasks\.3\.key: /); // PULLMAN_TASK_KEY
    expect(thrown(bad({ shell: '\0' }))).toMatchObject({ code: 'INVALID_TASK_SPEC', status: 400 });
    expect(resolveTaskSpec({ command: ['printf', '\\0'] }, undefined, 't').command).toEqual(['printf', '\\0']); // a backslash and a zero are fine
  });

  it('rejects a zero timeout with INVALID_TASK_SPEC', () => {
    for (const timeout of [0, '0', '0s']) {
      const err = thrown(() => resolveTaskSpec({ shell: 'x', timeout }, undefined, 'tasks[2]'));
      expect(err.code).toBe('INVALID_TASK_SPEC');
      expect(err.message).toContain('tasks[2].timeout');
    }
  });

  it('rejects an unparseable or too large timeout (also one from the defaults), naming the field and value', () => {
    for (const [spec, defaults] of [
      [{ shell: 'x', timeout: '1.5' }, undefined],
      [{ shell: 'x', timeout: '9999h' }, undefined],
      [{ shell: 'x' }, { timeout: 'soon' }],
    ] as Array<[TaskSpec, TaskDefaults | undefined]>) {
      const err = thrown(() => resolveTaskSpec(spec, defaults, 'tasks[9]'));
      expect(err.status).toBe(400);
      expect(['INVALID_INPUT', 'INVALID_TASK_SPEC']).toContain(err.code);
      expect(err.message).toContain('tasks[9].timeout');
      expect(err.message).toContain(JSON.stringify(spec.timeout ?? defaults?.timeout));
    }
  });
});

describe('taskTimeoutMs', () => {
  it('is null without a timeout and milliseconds with one', () => {
    expect(taskTimeoutMs({ shell: 'x' })).toBeNull();
    expect(taskTimeoutMs({ shell: 'x', timeout: '2h' })).toBe(7_200_000);
    expect(taskTimeoutMs({ shell: 'x', timeout: 250 })).toBe(250);
  });
});

describe('job and task ids', () => {
  it('formats with a prefix', () => {
    expect(formatJobId(1)).toBe('job-1');
    expect(formatTaskId(42)).toBe('task-42');
  });

  it('round-trips', () => {
    for (const n of [1, 9, 10, 12345, 2 ** 40, Number.MAX_SAFE_INTEGER]) {
      expect(parseJobId(formatJobId(n))).toBe(n);
      expect(parseTaskId(formatTaskId(n))).toBe(n);
    }
  });

  it('does not confuse job and task ids', () => {
    expect(parseJobId('task-1')).toBeNull();
    expect(parseTaskId('job-1')).toBeNull();
  });

  it.each(['', 'job-', 'job-0', 'job-01', 'job--1', 'job-1.5', 'job-1a', 'job-a', ' job-1', 'job-1 ', 'JOB-1', 'job-99999999999999999', 'job-1e3', 'job-+1'])(
    'rejects %j',
    (bad) => {
      expect(parseJobId(bad)).toBeNull();
      expect(parseTaskId(bad.replace('job', 'task'))).toBeNull();
    },
  );

  it('rejects 16-digit numbers beyond the safe integer range', () => {
    expect(parseTaskId('task-9999999999999999')).toBeNull();
  });
});

describe('jsonDepthWithin', () => {
  const nest = (n: number, leaf: unknown = 1): unknown => {
    let v = leaf;
    for (let i = 0; i < n; i++) v = i % 2 ? [v] : { a: v };
    return v;
  };

  it('counts arrays and objects; scalars are depth 0', () => {
    for (const scalar of [null, 1, 'x', true]) expect(jsonDepthWithin(scalar, 0)).toBe(true);
    expect(jsonDepthWithin([], 0)).toBe(false);
    expect(jsonDepthWithin([1, 'x'], 1)).toBe(true);
    expect(jsonDepthWithin({ a: [1], b: { c: {} } }, 2)).toBe(false);
    expect(jsonDepthWithin({ a: [1], b: { c: {} } }, 3)).toBe(true);
  });

  it('accepts MAX_JSON_DEPTH levels, which JSON.stringify can serialise, and rejects one more', () => {
    expect(jsonDepthWithin(nest(MAX_JSON_DEPTH))).toBe(true);
    expect(() => JSON.stringify(nest(MAX_JSON_DEPTH))).not.toThrow();
    expect(jsonDepthWithin(nest(MAX_JSON_DEPTH + 1))).toBe(false);
  });

  it('rejects, without overflowing the stack, a value JSON.stringify cannot serialise', () => {
    const deep = JSON.parse(`${'['.repeat(200_000)}${']'.repeat(200_000)}`) as unknown;
    expect(() => JSON.stringify(deep)).toThrow(RangeError);
    expect(jsonDepthWithin(deep)).toBe(false);
  });

  it('resolveTaskSpec refuses a meta nested too deeply, naming it', () => {
    expect(() => resolveTaskSpec({ shell: 'x', meta: nest(MAX_JSON_DEPTH) as Record<string, unknown> }, undefined, 'tasks.0')).not.toThrow();
    const err = (() => {
      try {
        resolveTaskSpec({ shell: 'x' }, { meta: nest(MAX_JSON_DEPTH + 1) as Record<string, unknown> }, 'line 3');
      } catch (e) {
        return e as PullmanError;
      }
      throw new Error('did not throw');
    })();
    expect(err.code).toBe('INVALID_TASK_SPEC');
    expect(err.message).toBe(`line 3.meta: nested deeper than ${MAX_JSON_DEPTH} levels`);
  });
});
