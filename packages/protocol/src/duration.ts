import { PullmanError } from './errors.js';

const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 } as const;
const DURATION_RE = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/;

/** Largest duration we accept: ~24.8 days, the limit of Node's setTimeout. */
export const MAX_DURATION_MS = 2_147_483_647;

/**
 * Parses `500ms`, `30s`, `5m`, `2h`, or an integer number of milliseconds (number or digits).
 * Returns milliseconds, or throws PullmanError(INVALID_INPUT) naming `what` and the value.
 */
export function parseDuration(value: string | number, what = 'duration'): number {
  let ms: number | undefined;
  if (typeof value === 'number') {
    if (Number.isInteger(value) && value >= 0) ms = value;
  } else {
    const text = value.trim();
    if (/^\d+$/.test(text)) {
      ms = Number(text);
    } else {
      const m = DURATION_RE.exec(text);
      if (m) ms = Math.round(Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS]);
    }
  }
  if (ms === undefined || !Number.isFinite(ms)) {
    throw new PullmanError(
      'INVALID_INPUT',
      `${what}: ${JSON.stringify(value)} is not a duration (use 500ms, 30s, 5m, 2h or integer milliseconds)`,
    );
  }
  if (ms > MAX_DURATION_MS) {
    throw new PullmanError('INVALID_INPUT', `${what}: ${JSON.stringify(value)} is longer than the maximum of ${MAX_DURATION_MS}ms`);
  }
  return ms;
}

/** Formats milliseconds compactly for logs and tables: 1500 -> "1.5s", 7200000 -> "2h". */
export function formatDuration(ms: number): string {
  if (ms < 1_000) return `${ms}ms`;
  if (ms < 60_000) return `${+(ms / 1_000).toFixed(1)}s`;
  if (ms < 3_600_000) return `${+(ms / 60_000).toFixed(1)}m`;
  return `${+(ms / 3_600_000).toFixed(1)}h`;
}
