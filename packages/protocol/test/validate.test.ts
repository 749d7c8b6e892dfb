import { describe, expect, it } from 'vitest';
import {
  CreateJobBody,
  MAX_RESULTS_PER_MESSAGE,
  ManagerMessage,
  PROTOCOL_VERSION,
  PullmanError,
  TaskSpec,
  WorkerMessage,
  compileChecker,
  type ErrorCode,
} from '../src/index.js';

function parseError(fn: () => unknown): PullmanError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(PullmanError);
    return err as PullmanError;
  }
  throw new Error('expected a PullmanError, nothing was thrown');
}

describe('compileChecker(TaskSpec)', () => {
  const spec = compileChecker(TaskSpec, 'INVALID_TASK_SPEC');

  it('accepts the contract example', () => {
    const example = {
      key: 'seed-17',
      command: ['python3', 'sim.py', '--seed', '17'],
      env: { OMP_NUM_THREADS: '1' },
      cwd: '/data/run1',
      timeout: '2h',
      retries: 2,
      priority: 0,
      slots: 1,
      requires: ['gpu'],
      meta: { any: ['json', 1, null] },
    };
    expect(spec.check(example)).toBe(true);
    expect(spec.parse(example)).toBe(example);
  });

  it('accepts integer-millisecond timeouts', () => {
    expect(spec.check({ shell: 'x', timeout: 1500 })).toBe(true);
  });

  it('accepts exactly the duration strings parseDuration accepts', () => {
    for (const timeout of ['500ms', '30s', '1.5s', '5m', '2h', '1000', ' 30s ']) expect(spec.check({ shell: 'x', timeout }), timeout).toBe(true);
    for (const timeout of ['1.5', '5d', 's', '-1s', '1e3', '']) expect(spec.check({ shell: 'x', timeout }), timeout).toBe(false);
  });

  it('rejects an unknown field, naming it, with the given code', () => {
    const err = parseError(() => spec.parse({ shell: 'x', comand: ['ls'] }));
    expect(err.code).toBe('INVALID_TASK_SPEC');
    expect(err.message).toContain('unknown field');
    expect(err.message).toContain('"comand"');
    expect(spec.check({ shell: 'x', comand: ['ls'] })).toBe(false);
  });

  it('uses INVALID_INPUT by default', () => {
    const err = parseError(() => compileChecker(TaskSpec).parse({ shell: 'x', extra: 1 }));
    expect(err.code).toBe<ErrorCode>('INVALID_INPUT');
    expect(err.message).toContain('"extra"');
  });

  it('uses the given root in messages', () => {
    const err = parseError(() => compileChecker(TaskSpec, 'INVALID_TASK_SPEC', 'line 7').parse({ shell: 5 }));
    expect(err.message).toMatch(/^line 7\.shell: /);
  });

  it.each([
    ['shell is a number', { shell: 5 }, 'shell'],
    ['command is a string', { command: 'ls -l' }, 'command'],
    ['command is empty', { command: [] }, 'command'],
    ['retries is negative', { shell: 'x', retries: -1 }, 'retries'],
    ['retries is fractional', { shell: 'x', retries: 1.5 }, 'retries'],
    ['slots is zero', { shell: 'x', slots: 0 }, 'slots'],
    ['priority is a string', { shell: 'x', priority: 'high' }, 'priority'],
    ['env value is a number', { shell: 'x', env: { A: 1 } }, 'env'],
    ['requires is a string', { shell: 'x', requires: 'gpu' }, 'requires'],
    ['a label has a space', { shell: 'x', requires: ['g pu'] }, 'requires'],
    ['timeout is garbage', { shell: 'x', timeout: 'soon' }, 'timeout'],
    ['timeout is negative', { shell: 'x', timeout: -5 }, 'timeout'],
    ['key is empty', { shell: 'x', key: '' }, 'key'],
  ])('rejects a spec where %s, naming the field', (_label, value, field) => {
    expect(spec.check(value)).toBe(false);
    const err = parseError(() => spec.parse(value));
    expect(err.code).toBe('INVALID_TASK_SPEC');
    expect(err.message).toContain(field);
  });

  it('rejects non-objects', () => {
    for (const value of [null, 5, 'shell', [{ shell: 'x' }]]) expect(spec.check(value)).toBe(false);
  });

  it('names the path of a problem deep in a request body', () => {
    const body = compileChecker(CreateJobBody, 'INVALID_INPUT', 'body');
    const err = parseError(() => body.parse({ tasks: [{ shell: 'a' }, { shell: 'b' }, { shell: 'c', slotz: 2 }] }));
    expect(err.message).toBe('body.tasks.2: unknown field "slotz"');
  });

  it('rejects key in job defaults', () => {
    const body = compileChecker(CreateJobBody);
    expect(body.check({ defaults: { shell: 'x' } })).toBe(true);
    const err = parseError(() => body.parse({ defaults: { key: 'k' } }));
    expect(err.message).toContain('"key"');
  });
});

describe('worker-channel messages', () => {
  const worker = compileChecker(WorkerMessage, 'PROTOCOL_ERROR');

  const hello = {
    type: 'hello',
    protocol: PROTOCOL_VERSION,
    name: 'vm-0',
    hostname: 'vm-0.internal',
    slots: 4,
    labels: ['gpu', 'zone=1'],
    version: '0.1.0',
    vm: null,
    running: [{ taskId: 'task-3', leaseId: 'lease-abc' }],
  };
  const report = {
    exitCode: 0,
    signal: null,
    timedOut: false,
    cancelled: false,
    durationMs: 1234,
    stdoutTail: 'out',
    stderrTail: '',
    output: { answer: 42 },
    error: null,
  };
  const result = { type: 'result', taskId: 'task-3', leaseId: 'lease-abc', report };

  it('accepts a valid hello, with and without a workerId', () => {
    expect(worker.parse(hello)).toBe(hello);
    expect(worker.check({ ...hello, workerId: 'w-1' })).toBe(true);
  });

  it('accepts a hello with VM facts', () => {
    const vm = {
      vmId: 'id', resourceId: '/subscriptions/x', scaleSet: 'ss', instanceId: '3', name: 'ss_3',
      vmSize: 'Standard_D2s_v5', location: 'westeurope', zone: '1', priority: 'Spot', provisioningState: 'Succeeded',
    };
    expect(worker.check({ ...hello, vm })).toBe(true);
    expect(worker.check({ ...hello, vm: { ...vm, extra: 1 } })).toBe(false);
  });

  it('accepts a valid pull, heartbeat, result, release, draining and bye', () => {
    for (const msg of [
      { type: 'pull', credits: 3 },
      { type: 'heartbeat' },
      result,
      { ...result, report: { ...report, exitCode: null, signal: 'SIGKILL', timedOut: true, output: null, error: { code: 'TIMED_OUT', message: 'x' } } },
      { type: 'release', taskId: 'task-3', leaseId: 'l', reason: 'drain' },
      { type: 'draining', reason: 'SIGTERM' },
      { type: 'bye' },
    ]) {
      expect(worker.check(msg), JSON.stringify(msg)).toBe(true);
      expect(worker.parse(msg)).toBe(msg);
    }
  });

  it('accepts results: one or more results in one message, each as strict as a result', () => {
    const { type: _t, ...item } = result;
    const msg = { type: 'results', results: [item, { ...item, taskId: 'task-4', leaseId: 'lease-def' }] };
    expect(worker.parse(msg)).toBe(msg);
    expect(worker.check({ type: 'results', results: [] })).toBe(false);
    expect(worker.check({ type: 'results', results: Array.from({ length: MAX_RESULTS_PER_MESSAGE }, () => item) })).toBe(true);
    expect(worker.check({ type: 'results', results: Array.from({ length: MAX_RESULTS_PER_MESSAGE + 1 }, () => item) })).toBe(false);
    // An entry is a result without its type: the type or a stray field is an error, named.
    expect(worker.check({ type: 'results', results: [result] })).toBe(false);
    expect(parseError(() => worker.parse({ type: 'results', results: [item, { ...item, report: { ...report, exitcode: 0 } }] })).message).toContain('"exitcode"');
    const { report: _r, ...noReport } = item;
    expect(parseError(() => worker.parse({ type: 'results', results: [noReport] })).message).toContain('report');
  });

  it('rejects an unknown type, naming the type', () => {
    const err = parseError(() => worker.parse({ type: 'gimme', credits: 1 }));
    expect(err.code).toBe('PROTOCOL_ERROR');
    expect(err.message).toContain('type');
    expect(err.message).toContain('"gimme"');
    expect(worker.check({ type: 'gimme' })).toBe(false);
  });

  it('rejects a message without a type, and non-objects', () => {
    expect(worker.check({ credits: 1 })).toBe(false);
    expect(parseError(() => worker.parse({ credits: 1 })).message).toContain('type');
    for (const value of [null, 'pull', 3, [{ type: 'pull', credits: 1 }]]) {
      expect(worker.check(value)).toBe(false);
      expect(parseError(() => worker.parse(value)).code).toBe('PROTOCOL_ERROR');
    }
  });

  it('rejects extra fields, naming only the extra one', () => {
    const err = parseError(() => worker.parse({ type: 'pull', credits: 2, urgent: true }));
    expect(err.code).toBe('PROTOCOL_ERROR');
    expect(err.message).toBe('value: unknown field "urgent"');
    expect(worker.check({ ...hello, extra: 1 })).toBe(false);
    expect(worker.check({ type: 'heartbeat', at: 1 })).toBe(false);
    expect(worker.check({ ...result, report: { ...report, exitcode: 0 } })).toBe(false);
    expect(parseError(() => worker.parse({ ...result, report: { ...report, exitcode: 0 } })).message).toContain('"exitcode"');
  });

  it('rejects wrong field types, naming the field of the branch the type names', () => {
    expect(worker.check({ type: 'pull', credits: 0 })).toBe(false);
    expect(worker.check({ type: 'pull', credits: 1.5 })).toBe(false);
    expect(worker.check({ type: 'pull', credits: '2' })).toBe(false);
    expect(parseError(() => worker.parse({ type: 'pull', credits: '2' })).message).toMatch(/^value\.credits: /);
    expect(worker.check({ ...hello, slots: 0 })).toBe(false);
    expect(worker.check({ ...hello, protocol: '1' })).toBe(false);
    expect(worker.check({ ...result, leaseId: '' })).toBe(false);
    expect(worker.check({ type: 'release', taskId: 't', leaseId: 'l', reason: 'bored' })).toBe(false);
  });

  it('rejects a result missing its report', () => {
    const { report: _r, ...noReport } = result;
    expect(worker.check(noReport)).toBe(false);
    expect(parseError(() => worker.parse(noReport)).message).toContain('report');
  });

  it('does not accept manager messages from a worker, and vice versa', () => {
    const manager = compileChecker(ManagerMessage, 'PROTOCOL_ERROR');
    expect(worker.check({ type: 'drain' })).toBe(false);
    expect(manager.check({ type: 'drain' })).toBe(true);
    expect(manager.check({ type: 'pull', credits: 1 })).toBe(false);
    expect(manager.check({ type: 'ack', taskId: 't', leaseId: 'l', status: 'stale' })).toBe(true);
    expect(manager.check({ type: 'ack', taskId: 't', leaseId: 'l', status: 'maybe' })).toBe(false);
  });
});
