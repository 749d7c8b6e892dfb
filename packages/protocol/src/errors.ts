/**
 * Every error code Pullman emits, with the HTTP status it maps to.
 *
 * One table on purpose: the API, the worker channel, the CLI and the docs all read
 * codes from here, so a code is never spelled two ways. Codes are stable; add, never rename.
 */
export const ERROR_CODES = {
  // Request problems (4xx)
  INVALID_INPUT: { status: 400, description: 'The body, a query parameter or a path parameter is malformed.' },
  INVALID_TASK_SPEC: { status: 400, description: 'A TaskSpec breaks a rule the schema cannot express (e.g. both or neither of command/shell).' },
  UNAUTHORIZED: { status: 401, description: 'No bearer token, or a token that matches no role.' },
  FORBIDDEN: { status: 403, description: 'The token is valid but its role may not use this route.' },
  JOB_NOT_FOUND: { status: 404, description: 'No job has this id.' },
  TASK_NOT_FOUND: { status: 404, description: 'No task has this id.' },
  WORKER_NOT_FOUND: { status: 404, description: 'No worker has this id.' },
  ROUTE_NOT_FOUND: { status: 404, description: 'No route matches this method and path.' },
  WORKER_BUNDLE_NOT_FOUND: { status: 404, description: 'The manager has no worker bundle file to serve (see --worker-bundle).' },
  JOB_SEALED: { status: 409, description: 'Tasks cannot be added to a sealed job.' },
  CONFLICT: { status: 409, description: 'The request conflicts with the current state of the resource.' },
  PAYLOAD_TOO_LARGE: { status: 413, description: 'The body, an NDJSON line or a message exceeds its size limit.' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, description: 'The Content-Type is not one this route accepts.' },
  RATE_LIMITED: { status: 429, description: 'Too many failed authentication attempts from this address.' },
  // Server problems (5xx)
  STORAGE_FULL: { status: 507, description: 'The database disk is full; nothing was stored. Retry when space returns.' },
  UNAVAILABLE: { status: 503, description: 'The manager is shutting down or temporarily cannot serve.' },
  INTERNAL: { status: 500, description: 'An unexpected failure; the manager log has the details.' },
  // Task outcomes (appear in Task.result.error and history, never as HTTP statuses)
  WORKER_LOST: { status: 500, description: 'The task was lost to infrastructure (lease expired, worker gone, drained) more often than the cap allows.' },
  TIMED_OUT: { status: 500, description: 'The task ran past its timeout and its process group was killed.' },
  NONZERO_EXIT: { status: 500, description: 'The task exited with a non-zero code or was killed by a signal.' },
  SPAWN_FAILED: { status: 500, description: 'The worker could not start the command (missing executable, bad cwd).' },
  OUTPUT_INVALID: { status: 500, description: 'The task wrote something other than JSON to $PULLMAN_OUTPUT.' },
  OUTPUT_TOO_LARGE: { status: 500, description: 'The task wrote more than 1 MiB to $PULLMAN_OUTPUT.' },
  CANCELLED: { status: 500, description: 'The task was cancelled by a user.' },
  // Worker channel
  PROTOCOL_ERROR: { status: 400, description: 'A worker-channel message is malformed or out of order.' },
  // Configuration (CLI / daemons exit 2)
  CONFIG_INVALID: { status: 400, description: 'A configuration setting has an invalid value.' },
} as const satisfies Record<string, { status: number; description: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

/** The body of every 4xx/5xx answer: `{"error":{"code","message"}}`. */
export interface ErrorBody {
  error: { code: ErrorCode; message: string };
}

/**
 * The one error class with a code. Control flow never branches on message text:
 * it branches on `code`, which maps to an HTTP status through ERROR_CODES.
 */
export class PullmanError extends Error {
  override readonly name = 'PullmanError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  get status(): number {
    return ERROR_CODES[this.code].status;
  }

  toBody(): ErrorBody {
    return { error: { code: this.code, message: this.message } };
  }
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ERROR_CODES, value);
}

/** Turns anything thrown into an Error, so catch sites never handle `unknown` twice. */
export function coerceError(thrown: unknown): Error {
  if (thrown instanceof Error) return thrown;
  return new Error(typeof thrown === 'string' ? thrown : JSON.stringify(thrown));
}
