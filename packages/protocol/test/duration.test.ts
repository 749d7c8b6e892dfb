import { describe, expect, it } from 'vitest';
import { MAX_DURATION_MS, PullmanError, formatDuration, parseDuration } from '../src/index.js';

function thrown(fn: () => unknown): PullmanError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(PullmanError);
    return err as PullmanError;
  }
  throw new Error('expected a PullmanError, nothing was thrown');
}

describe('parseDuration', () => {
  it.each([
    ['500ms', 500],
    ['30s', 30_000],
    ['5m', 300_000],
    ['2h', 7_200_000],
    ['1.5s', 1_500],
    ['0ms', 0],
    [' 30s ', 30_000],
  ])('parses %j as %i ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it('accepts an integer number of milliseconds as a number', () => {
    expect(parseDuration(1234)).toBe(1234);
    expect(parseDuration(0)).toBe(0);
  });

  it('accepts an integer number of milliseconds as a digit string', () => {
    expect(parseDuration('1234')).toBe(1234);
    expect(parseDuration('0')).toBe(0);
  });

  it('accepts exactly the maximum and rejects one more', () => {
    expect(parseDuration(MAX_DURATION_MS)).toBe(MAX_DURATION_MS);
    expect(parseDuration(String(MAX_DURATION_MS))).toBe(MAX_DURATION_MS);
    const err = thrown(() => parseDuration(MAX_DURATION_MS + 1));
    expect(err.code).toBe('INVALID_INPUT');
    expect(err.message).toContain(String(MAX_DURATION_MS + 1));
  });

  it.each([
    ['garbage', 'abc'],
    ['empty string', ''],
    ['unknown unit', '5d'],
    ['unit without number', 'ms'],
    ['negative string', '-5s'],
    ['negative digits', '-100'],
    ['exponent', '1e3'],
    ['number then garbage', '10 seconds'],
    ['decimal without unit', '1.5'],
  ])('rejects %s (%j) with INVALID_INPUT naming the value', (_label, value) => {
    const err = thrown(() => parseDuration(value, 'lease-ttl'));
    expect(err.code).toBe('INVALID_INPUT');
    expect(err.status).toBe(400);
    expect(err.message).toContain('lease-ttl');
    expect(err.message).toContain(JSON.stringify(value));
  });

  it.each([
    ['negative number', -1],
    ['fractional number', 1.5],
    ['NaN', Number.NaN],
    ['Infinity', Number.POSITIVE_INFINITY],
  ])('rejects %s', (_label, value) => {
    const err = thrown(() => parseDuration(value));
    expect(err.code).toBe('INVALID_INPUT');
    expect(err.message).toMatch(/^duration: /);
  });

  it('rejects values that are too large, in every spelling', () => {
    for (const value of ['600h', '99999999999', 10 ** 12, '25000000s']) {
      const err = thrown(() => parseDuration(value, 'timeout'));
      expect(err.code).toBe('INVALID_INPUT');
      expect(err.message).toContain('timeout');
      expect(err.message).toContain(JSON.stringify(value));
      expect(err.message).toContain('maximum');
    }
  });
});

describe('formatDuration', () => {
  it('formats compactly', () => {
    expect(formatDuration(500)).toBe('500ms');
    expect(formatDuration(1_500)).toBe('1.5s');
    expect(formatDuration(300_000)).toBe('5m');
    expect(formatDuration(7_200_000)).toBe('2h');
  });

  it('round-trips through parseDuration for whole units', () => {
    for (const ms of [250, 30_000, 300_000, 7_200_000]) expect(parseDuration(formatDuration(ms))).toBe(ms);
  });
});
