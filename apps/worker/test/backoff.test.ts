import { describe, expect, it } from 'vitest';
import { backoffDelay } from '../src/daemon.js';

const cap = (attempt: number): number => Math.min(30_000, 500 * 2 ** attempt);

describe('backoffDelay', () => {
  it('is 0 when the random draw is 0', () => {
    for (const attempt of [0, 1, 5, 20, 1_000]) expect(backoffDelay(attempt, () => 0)).toBe(0);
  });

  it('is just under min(30 s, 500 ms * 2^attempt) when the random draw is 0.999', () => {
    for (let attempt = 0; attempt <= 10; attempt++) {
      const limit = cap(attempt);
      const delay = backoffDelay(attempt, () => 0.999);
      expect(delay).toBe(Math.floor(0.999 * limit));
      expect(delay).toBeLessThan(limit);
    }
    expect(backoffDelay(0, () => 0.999)).toBe(499);
    expect(backoffDelay(3, () => 0.999)).toBe(3_996);
    expect(backoffDelay(6, () => 0.999)).toBe(29_970); // 500 * 64 = 32 s, capped at 30 s
  });

  it('scales linearly with the random draw (full jitter)', () => {
    expect(backoffDelay(2, () => 0.5)).toBe(1_000);
    expect(backoffDelay(10, () => 0.5)).toBe(15_000);
  });

  it('never exceeds 30 s, however large the attempt', () => {
    const almostOne = () => 1 - Number.EPSILON;
    for (const attempt of [6, 7, 16, 17, 64, 1_024, 1e6, Number.MAX_SAFE_INTEGER]) {
      const delay = backoffDelay(attempt, almostOne);
      expect(Number.isInteger(delay)).toBe(true);
      expect(delay).toBeGreaterThanOrEqual(29_999);
      expect(delay).toBeLessThan(30_000);
    }
  });

  it('stays a whole number of milliseconds in range with the real Math.random', () => {
    for (let attempt = 0; attempt < 50; attempt++) {
      const delay = backoffDelay(attempt);
      expect(Number.isInteger(delay)).toBe(true);
      expect(delay).toBeGreaterThanOrEqual(0);
      expect(delay).toBeLessThan(cap(attempt));
    }
  });
});
