import { PullmanApiError } from '@pullman/client';

/** Exit codes of `pullman` (CONTRACT.md). */
export const EXIT = { OK: 0, JOB_FAILED: 1, USAGE: 2, CONNECTION_OR_AUTH: 3 } as const;
export type ExitCode = 0 | 1 | 2 | 3;

/** A failure the CLI explains in one line and ends with a chosen exit code. */
export class CliError extends Error {
  override readonly name = 'CliError';
  constructor(
    message: string,
    readonly exitCode: ExitCode,
  ) {
    super(message);
  }
}

/** API codes that mean "what you gave me is wrong": a usage error, exit 2. */
const USAGE_CODES = new Set(['INVALID_INPUT', 'INVALID_TASK_SPEC', 'PAYLOAD_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE']);

/**
 * Maps anything thrown to one stderr line and an exit code:
 * 3 for an unreachable manager or a refused token, 2 for input the manager rejected,
 * 1 for every other refusal (unknown id, sealed job, server error).
 */
export function explain(err: unknown, tokenHint: string): { message: string; exitCode: ExitCode } {
  if (err instanceof CliError) return { message: err.message, exitCode: err.exitCode };
  if (err instanceof PullmanApiError) {
    if (err.code === 'CONNECTION_FAILED') return { message: err.message, exitCode: EXIT.CONNECTION_OR_AUTH };
    if (err.isAuthError) return { message: `the manager refused the token (${err.code}: ${err.message}); ${tokenHint}`, exitCode: EXIT.CONNECTION_OR_AUTH };
    if (USAGE_CODES.has(err.code)) return { message: `${err.code}: ${err.message}`, exitCode: EXIT.USAGE };
    return { message: `${err.code}: ${err.message}`, exitCode: EXIT.JOB_FAILED };
  }
  const message = err instanceof Error ? err.message : String(err);
  return { message: message.split('\n')[0] ?? message, exitCode: EXIT.JOB_FAILED };
}
