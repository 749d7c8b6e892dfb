import { describe, expect, it } from 'vitest';
import { Throughput, WINDOW_SECONDS } from '../src/throughput.js';

describe('Throughput', () => {
  it('counts per second, reports only complete seconds, and forgets what left the window', () => {
    let now = 1_000_000_000_000; // on a second boundary
    const t = new Throughput(() => now);
    const s0 = now / 1000;
    t.record('succeeded', 3);
    t.record('failed');
    expect(t.since()).toHaveLength(WINDOW_SECONDS);
    expect(t.since(s0 - 1)).toEqual([]); // second s0 is still filling
    now += 1_000;
    t.record('succeeded');
    expect(t.since(s0 - 1)).toEqual([{ t: s0, succeeded: 3, failed: 1 }]);
    now += 2_000;
    expect(t.since(s0 - 1)).toEqual([{ t: s0, succeeded: 3, failed: 1 }, { t: s0 + 1, succeeded: 1, failed: 0 }, { t: s0 + 2, succeeded: 0, failed: 0 }]);
    // Ten minutes later the same bucket is reused for a new second, starting from zero.
    now = (s0 + WINDOW_SECONDS) * 1000;
    t.record('failed', 2);
    now += 1_000;
    const window = t.since();
    expect(window).toHaveLength(WINDOW_SECONDS);
    expect(window[0]).toEqual({ t: s0 + 1, succeeded: 1, failed: 0 });
    expect(window[window.length - 1]).toEqual({ t: s0 + WINDOW_SECONDS, succeeded: 0, failed: 2 });
    expect(window.reduce((n, p) => n + p.succeeded + p.failed, 0)).toBe(3);
  });
});
