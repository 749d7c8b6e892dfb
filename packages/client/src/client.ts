import type {
  AddTasksJsonBody,
  CreateJobBody,
  Job,
  JobList,
  JobState,
  ResultLine,
  RetryBody,
  SubmitResult,
  Task,
  TaskDefaults,
  TaskList,
  TaskState,
  Worker,
  WorkerList,
} from '@pullman/protocol';
import { isErrorCode } from '@pullman/protocol';
import { PullmanApiError, PullmanConnectionError, describeFetchFailure } from './errors.js';
import { NDJSON_CONTENT_TYPE, encodeNdjson, splitLines, type TaskSource } from './ndjson.js';

export interface PullmanClientOptions {
  /** Manager base URL, e.g. `http://127.0.0.1:8080`. */
  url: string;
  /** Admin token (sent as `Authorization: Bearer`). Only /healthz, /metrics and /docs work without. */
  token?: string | undefined;
  /** Extra CA certificate(s), PEM, trusted for an https manager with its own certificate. */
  ca?: string | Buffer | undefined;
  /** Per-request limit on waiting for the answer's headers; default 60 s. Streams are not cut. */
  requestTimeoutMs?: number;
}

export interface PageOptions {
  limit?: number;
  cursor?: string;
}

export interface SubmitOptions {
  name?: string;
  defaults?: TaskDefaults;
  /** Leave the job open for more tasks instead of sealing it after the upload. */
  open?: boolean;
}

export interface WaitOptions {
  /** Poll interval; default 1 s. */
  intervalMs?: number;
  /** Called with every job state seen, the last one included. */
  onUpdate?: (job: Job) => void;
  signal?: AbortSignal;
}

type FetchFn = typeof globalThis.fetch;

/**
 * A typed client for every route of the manager's HTTP API (CONTRACT.md).
 *
 * Each method is one request, except the iterators (`jobs`, `tasks`), which follow cursors,
 * and `submit`, which creates, streams and seals. Every failure is a PullmanApiError whose
 * `code` is the API's code; an unreachable manager is a PullmanConnectionError
 * (`CONNECTION_FAILED`, status 0).
 */
export class PullmanClient {
  readonly url: string;
  readonly #token: string | undefined;
  readonly #requestTimeoutMs: number;
  readonly #fetch: Promise<FetchFn>;

  constructor(options: PullmanClientOptions) {
    let parsed: URL;
    try {
      parsed = new URL(options.url);
    } catch {
      throw new TypeError(`PullmanClient: url ${JSON.stringify(options.url)} is not a URL (e.g. http://127.0.0.1:8080)`);
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
      throw new TypeError(`PullmanClient: url ${JSON.stringify(options.url)} must start with http:// or https://`);
    }
    this.url = parsed.href.replace(/\/+$/, '');
    this.#token = options.token;
    this.#requestTimeoutMs = options.requestTimeoutMs ?? 60_000;
    this.#fetch = options.ca === undefined ? Promise.resolve(globalThis.fetch) : fetchTrusting(options.ca);
  }

  // ---- system ----------------------------------------------------------------------------

  health(): Promise<{ status: 'ok' }> {
    return this.#json('GET', '/healthz');
  }

  /** Prometheus text exposition. */
  async metrics(): Promise<string> {
    return (await this.#send('GET', '/metrics')).text();
  }

  /** The OpenAPI document. */
  openApi(): Promise<Record<string, unknown>> {
    return this.#json('GET', '/docs/json');
  }

  // ---- jobs ------------------------------------------------------------------------------

  /** POST /v1/jobs. Up to 10,000 tasks inline; stream more with `streamTasks` or `submit`. */
  createJob(body: CreateJobBody = {}): Promise<Job> {
    return this.#json('POST', '/v1/jobs', body);
  }

  /** POST /v1/jobs/:id/tasks with a JSON body (up to 10,000 tasks). */
  addTasks(jobId: string, tasks: AddTasksJsonBody['tasks']): Promise<SubmitResult> {
    return this.#json('POST', `/v1/jobs/${seg(jobId)}/tasks`, { tasks });
  }

  /**
   * POST /v1/jobs/:id/tasks as one streamed NDJSON upload of any size. Memory stays flat on
   * both sides. A bad line stops the upload (400); the tasks before it stay accepted, so
   * resubmitting the fixed source is safe when tasks have keys.
   */
  async streamTasks(jobId: string, source: TaskSource): Promise<SubmitResult> {
    const res = await this.#send('POST', `/v1/jobs/${seg(jobId)}/tasks`, {
      body: encodeNdjson(source),
      contentType: NDJSON_CONTENT_TYPE,
      streaming: true,
    });
    return (await res.json()) as SubmitResult;
  }

  sealJob(jobId: string): Promise<Job> {
    return this.#json('POST', `/v1/jobs/${seg(jobId)}/seal`);
  }

  /**
   * Creates an open job, streams the tasks into it, and seals it (unless `open`).
   * The job is returned as it stands after the last step.
   */
  async submit(source: TaskSource, options: SubmitOptions = {}): Promise<{ job: Job } & SubmitResult> {
    const created = await this.createJob({ name: options.name, defaults: options.defaults, open: true });
    const counts = await this.streamTasks(created.id, source);
    const job = options.open ? await this.getJob(created.id) : await this.sealJob(created.id);
    return { job, ...counts };
  }

  listJobs(query: PageOptions & { state?: JobState } = {}): Promise<JobList> {
    return this.#json('GET', `/v1/jobs${qs(query)}`);
  }

  /** Every job, newest first, following cursors page by page. */
  async *jobs(query: { state?: JobState; pageSize?: number } = {}): AsyncGenerator<Job> {
    let cursor: string | null | undefined;
    do {
      const page = await this.listJobs({ state: query.state, limit: query.pageSize ?? 100, cursor: cursor ?? undefined });
      yield* page.jobs;
      cursor = page.nextCursor;
    } while (cursor);
  }

  getJob(jobId: string): Promise<Job> {
    return this.#json('GET', `/v1/jobs/${seg(jobId)}`);
  }

  listTasks(jobId: string, query: PageOptions & { state?: TaskState } = {}): Promise<TaskList> {
    return this.#json('GET', `/v1/jobs/${seg(jobId)}/tasks${qs(query)}`);
  }

  /** Every task of a job in submission order, following cursors page by page. */
  async *tasks(jobId: string, query: { state?: TaskState; pageSize?: number } = {}): AsyncGenerator<Task> {
    let cursor: string | null | undefined;
    do {
      const page = await this.listTasks(jobId, { state: query.state, limit: query.pageSize ?? 1_000, cursor: cursor ?? undefined });
      yield* page.tasks;
      cursor = page.nextCursor;
    } while (cursor);
  }

  /** GET /v1/jobs/:id/results, streamed: one raw NDJSON line at a time (no newline). */
  async *resultLines(jobId: string): AsyncGenerator<string> {
    const res = await this.#send('GET', `/v1/jobs/${seg(jobId)}/results`);
    if (!res.body) return;
    try {
      yield* splitLines(res.body as unknown as AsyncIterable<Uint8Array>);
    } catch (err) {
      throw new PullmanConnectionError(`the results download from ${this.url} broke off (${describeFetchFailure(err)})`, { cause: err });
    }
  }

  /** GET /v1/jobs/:id/results, streamed and parsed: one ResultLine per terminal task. */
  async *results(jobId: string): AsyncGenerator<ResultLine> {
    for await (const line of this.resultLines(jobId)) {
      try {
        yield JSON.parse(line) as ResultLine;
      } catch (err) {
        throw new PullmanApiError('BAD_RESPONSE', 200, `a results line is not JSON: ${line.slice(0, 80)}`, { cause: err });
      }
    }
  }

  cancelJob(jobId: string): Promise<Job> {
    return this.#json('POST', `/v1/jobs/${seg(jobId)}/cancel`);
  }

  /** Requeues failed (default) or cancelled tasks with a fresh retry budget. */
  retryJob(jobId: string, body: RetryBody = {}): Promise<{ requeued: number }> {
    return this.#json('POST', `/v1/jobs/${seg(jobId)}/retry`, body);
  }

  /**
   * Polls a job until it is no longer `active` and returns it. `onUpdate` sees every poll,
   * which is what progress displays hang off.
   */
  async waitForJob(jobId: string, options: WaitOptions = {}): Promise<Job> {
    const interval = options.intervalMs ?? 1_000;
    for (;;) {
      options.signal?.throwIfAborted();
      const job = await this.getJob(jobId);
      options.onUpdate?.(job);
      if (job.state !== 'active') return job;
      await sleep(interval, options.signal);
    }
  }

  // ---- tasks -----------------------------------------------------------------------------

  /** A task with its attempt history. */
  getTask(taskId: string): Promise<Task> {
    return this.#json('GET', `/v1/tasks/${seg(taskId)}`);
  }

  cancelTask(taskId: string): Promise<Task> {
    return this.#json('POST', `/v1/tasks/${seg(taskId)}/cancel`);
  }

  // ---- workers ---------------------------------------------------------------------------

  async listWorkers(): Promise<Worker[]> {
    return (await this.#json<WorkerList>('GET', '/v1/workers')).workers;
  }

  getWorker(workerId: string): Promise<Worker> {
    return this.#json('GET', `/v1/workers/${seg(workerId)}`);
  }

  drainWorker(workerId: string): Promise<Worker> {
    return this.#json('POST', `/v1/workers/${seg(workerId)}/drain`);
  }

  // ---- transport -------------------------------------------------------------------------

  async #json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.#send(method, path, body === undefined ? {} : { body: JSON.stringify(body), contentType: 'application/json' });
    const text = await res.text();
    try {
      return JSON.parse(text) as T;
    } catch (err) {
      throw new PullmanApiError('BAD_RESPONSE', res.status, `${method} ${path}: the answer is not JSON: ${text.slice(0, 120)}`, { cause: err });
    }
  }

  /** One request; returns the response when it is 2xx, throws PullmanApiError otherwise. */
  async #send(
    method: string,
    path: string,
    opts: { body?: string | AsyncIterable<Uint8Array>; contentType?: string; streaming?: boolean } = {},
  ): Promise<Response> {
    const fetchFn = await this.#fetch;
    const headers: Record<string, string> = { accept: 'application/json, application/x-ndjson;q=0.9, */*;q=0.1' };
    if (this.#token) headers.authorization = `Bearer ${this.#token}`;
    if (opts.contentType) headers['content-type'] = opts.contentType;
    // The timeout bounds the wait for the answer's headers only: a long result download or a
    // big upload (whose answer comes after the last byte) must never be cut by it.
    const controller = new AbortController();
    const timer = opts.streaming ? null : setTimeout(() => controller.abort(), this.#requestTimeoutMs);
    let res: Response;
    try {
      res = await fetchFn(`${this.url}${path}`, {
        method,
        headers,
        body: opts.body as RequestInit['body'],
        signal: controller.signal,
        // Node's fetch needs half duplex to send a streamed request body.
        ...(opts.body !== undefined && typeof opts.body !== 'string' ? { duplex: 'half' } : {}),
      } as RequestInit);
    } catch (err) {
      if (err instanceof PullmanApiError) throw err;
      const why = controller.signal.aborted ? `no answer within ${this.#requestTimeoutMs} ms` : describeFetchFailure(err);
      throw new PullmanConnectionError(`cannot reach the manager at ${this.url} (${why})`, { cause: err });
    } finally {
      if (timer) clearTimeout(timer);
    }
    if (res.ok) return res;
    throw await apiErrorFrom(res, method, path);
  }
}

async function apiErrorFrom(res: Response, method: string, path: string): Promise<PullmanApiError> {
  const text = await res.text().catch(() => '');
  try {
    const body = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } };
    const code = body.error?.code;
    const message = body.error?.message;
    if (isErrorCode(code) && typeof message === 'string') return new PullmanApiError(code, res.status, message);
  } catch {
    // not our error shape: fall through
  }
  return new PullmanApiError('BAD_RESPONSE', res.status, `${method} ${path}: HTTP ${res.status} ${text.slice(0, 120)}`.trim());
}

/**
 * A fetch that trusts an extra CA. Node's built-in fetch cannot take one, so this uses
 * undici's own fetch and Agent together (mixing undici's Agent with Node's bundled fetch
 * breaks across versions). Loaded only when a CA is given.
 */
async function fetchTrusting(ca: string | Buffer): Promise<FetchFn> {
  const undici = await import('undici');
  const dispatcher = new undici.Agent({ connect: { ca } });
  return ((input: string, init?: RequestInit) => undici.fetch(input, { ...(init as object), dispatcher } as Parameters<typeof undici.fetch>[1])) as unknown as FetchFn;
}

function seg(id: string): string {
  if (typeof id !== 'string' || id === '') throw new TypeError(`PullmanClient: an id must be a non-empty string (got ${JSON.stringify(id)})`);
  return encodeURIComponent(id);
}

function qs(query: object): string {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query) as Array<[string, string | number | undefined]>) if (v !== undefined) params.set(k, String(v));
  const s = params.toString();
  return s ? `?${s}` : '';
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(done, ms);
    function done() {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }
    function onAbort() {
      clearTimeout(timer);
      reject(signal!.reason);
    }
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
