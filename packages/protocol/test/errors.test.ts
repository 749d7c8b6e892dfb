import { describe, expect, it } from 'vitest';
import { ERROR_CODES, PullmanError, coerceError, isErrorCode } from '../src/index.js';

describe('PullmanError', () => {
  it('maps its code to an HTTP status and an error body', () => {
    const err = new PullmanError('JOB_SEALED', 'job job-3 is sealed');
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe('PullmanError');
    expect(err.status).toBe(409);
    expect(err.toBody()).toEqual({ error: { code: 'JOB_SEALED', message: 'job job-3 is sealed' } });
    expect(new PullmanError('INVALID_INPUT', 'x').status).toBe(400);
    expect(new PullmanError('JOB_NOT_FOUND', 'x').status).toBe(404);
    expect(new PullmanError('PAYLOAD_TOO_LARGE', 'x').status).toBe(413);
  });

  it('keeps its cause', () => {
    const cause = new Error('disk');
    expect(new PullmanError('INTERNAL', 'x', { cause }).cause).toBe(cause);
  });

  it('has UPPER_SNAKE codes with a status and description each', () => {
    for (const [code, info] of Object.entries(ERROR_CODES)) {
      expect(code).toMatch(/^[A-Z]+(_[A-Z]+)*$/);
      expect(info.status).toBeGreaterThanOrEqual(400);
      expect(info.description.length).toBeGreaterThan(0);
    }
  });
});

describe('isErrorCode and coerceError', () => {
  it('recognises codes only', () => {
    expect(isErrorCode('WORKER_LOST')).toBe(true);
    expect(isErrorCode('toString')).toBe(false);
    expect(isErrorCode('worker_lost')).toBe(false);
    expect(isErrorCode(42)).toBe(false);
  });

  it('turns anything thrown into an Error', () => {
    const err = new Error('x');
    expect(coerceError(err)).toBe(err);
    expect(coerceError('boom').message).toBe('boom');
    expect(coerceError({ a: 1 }).message).toBe('{"a":1}');
  });
});
