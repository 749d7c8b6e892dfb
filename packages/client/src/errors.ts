import type { ErrorCode } from '@pullman/protocol';

/** Codes the client adds to the API's own: the request never got an API answer. */
export type ClientErrorCode = 'CONNECTION_FAILED' | 'BAD_RESPONSE';

/**
 * Every failure of a client call. `code` is the API's error code (ERROR_CODES in
 * @pullman/protocol) when the manager answered, so callers branch on `code`, never on text.
 * `status` is the HTTP status, or 0 when there was no answer.
 */
export class PullmanApiError extends Error {
  override readonly name: string = 'PullmanApiError';
  constructor(
    readonly code: ErrorCode | ClientErrorCode,
    readonly status: number,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  /** True for 401 (no or bad token), 403 (wrong role) and 429 (locked out after bad tokens). */
  get isAuthError(): boolean {
    return this.status === 401 || this.status === 403 || this.code === 'RATE_LIMITED';
  }
}

/** The manager could not be reached: refused, unresolvable, timed out, or a TLS failure. */
export class PullmanConnectionError extends PullmanApiError {
  override readonly name = 'PullmanConnectionError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('CONNECTION_FAILED', 0, message, options);
  }
}

/**
 * Names the low-level reason behind a failed fetch: `ECONNREFUSED`, `ENOTFOUND`,
 * `DEPTH_ZERO_SELF_SIGNED_CERT`... Node's fetch hides it in `cause` (sometimes two deep).
 */
export function describeFetchFailure(err: unknown): string {
  let e: unknown = err;
  let innermost = (err as Error)?.message ?? String(err);
  for (let depth = 0; depth < 4 && e; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && code !== 'UND_ERR_SOCKET') return code;
    if (typeof (e as Error).message === 'string' && (e as Error).message) innermost = (e as Error).message;
    const errors = (e as { errors?: unknown[] }).errors; // AggregateError from happy eyeballs
    if (Array.isArray(errors) && errors.length) e = errors[0];
    else e = (e as { cause?: unknown }).cause;
  }
  return innermost; // e.g. "bad port" for a port fetch refuses to use
}
