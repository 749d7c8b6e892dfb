/**
 * Azure Instance Metadata Service client: instance metadata and Scheduled Events.
 *
 * Plain node:http with no agent: IMDS is link-local and must never go through a proxy, whatever
 * HTTP(S)_PROXY or a future Node default says. Every request carries `Metadata: true`.
 */
import { request } from 'node:http';
import pRetry, { AbortError } from 'p-retry';
import { silentLog, type Log } from './log.js';

export const IMDS_DEFAULT_URL = 'http://169.254.169.254';
export const INSTANCE_API_VERSION = '2021-02-01';
export const SCHEDULED_EVENTS_API_VERSION = '2020-07-01';

/** The compute facts Pullman uses, typed; IMDS sends many more. */
export interface ComputeFacts {
  name: string;
  vmId: string;
  resourceId: string;
  subscriptionId: string;
  resourceGroupName: string;
  location: string;
  vmSize: string;
  /** Empty string when the VM is not zonal. */
  zone: string;
  /** Regular, Spot or Low. */
  priority: string;
  /** Scale set name for Uniform and Flexible members, empty otherwise. */
  vmScaleSetName: string;
  osType: string;
}

export interface ScheduledEvent {
  EventId: string;
  EventType: 'Reboot' | 'Redeploy' | 'Freeze' | 'Preempt' | 'Terminate' | string;
  ResourceType: string;
  Resources: string[];
  EventStatus: 'Scheduled' | 'Started' | string;
  /** RFC 1123 date, or empty when the event has started. */
  NotBefore: string;
  Description?: string;
  EventSource?: string;
  DurationInSeconds?: number;
}

export interface ScheduledEventsDocument {
  DocumentIncarnation: number;
  Events: ScheduledEvent[];
}

/** An IMDS answer that retrying will not fix (400, 404, 405...). */
export class ImdsError extends Error {
  override readonly name = 'ImdsError';
  constructor(
    message: string,
    readonly status: number | null,
  ) {
    super(message);
  }
}

export interface ImdsOptions {
  baseUrl?: string;
  /** Per-request timeout. */
  timeoutMs?: number;
  /** Retries after the first attempt for 410, 429, 5xx, timeouts and network errors. */
  retries?: number;
  log?: Log;
}

/** Statuses IMDS documents as transient: 410 (retry up to 70 s), 429 (rate limit), 5xx. */
const isTransient = (status: number): boolean => status === 410 || status === 429 || status >= 500;

export class ImdsClient {
  readonly baseUrl: string;
  private readonly timeoutMs: number;
  private readonly retries: number;
  private readonly log: Log;

  constructor(o: ImdsOptions = {}) {
    this.baseUrl = (o.baseUrl ?? IMDS_DEFAULT_URL).replace(/\/+$/, '');
    this.timeoutMs = o.timeoutMs ?? 5_000;
    // With 500 ms doubling to a 10 s cap, 9 retries span the ~70 s IMDS asks for after a 410.
    this.retries = o.retries ?? 9;
    this.log = o.log ?? silentLog;
  }

  /** GET /metadata/instance: this VM's compute facts. */
  async instance(signal?: AbortSignal): Promise<ComputeFacts> {
    const body = await this.call<{ compute?: Partial<ComputeFacts> }>('GET', `/metadata/instance?api-version=${INSTANCE_API_VERSION}`, { signal });
    return toComputeFacts(body.compute);
  }

  /**
   * True if IMDS answers within `timeoutMs` (one try, no retries): the `auto` gate's probe.
   * Off Azure the link-local address does not answer at all, so keep the timeout short.
   */
  async available(timeoutMs = 1_500): Promise<boolean> {
    try {
      await this.send('GET', `/metadata/instance?api-version=${INSTANCE_API_VERSION}`, undefined, timeoutMs);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * GET /metadata/scheduledevents. The very first call after boot can take up to two minutes
   * while the service switches on, so pass a long `timeoutMs` for it.
   */
  scheduledEvents(opts: { timeoutMs?: number; signal?: AbortSignal; retries?: number } = {}): Promise<ScheduledEventsDocument> {
    return this.call('GET', `/metadata/scheduledevents?api-version=${SCHEDULED_EVENTS_API_VERSION}`, opts);
  }

  /** Approves events so the platform may proceed now instead of at NotBefore. */
  async approveEvents(eventIds: string[], signal?: AbortSignal): Promise<void> {
    await this.call('POST', `/metadata/scheduledevents?api-version=${SCHEDULED_EVENTS_API_VERSION}`, {
      body: { StartRequests: eventIds.map((EventId) => ({ EventId })) },
      signal,
    });
  }

  private call<T>(method: string, path: string, o: { body?: unknown; timeoutMs?: number; signal?: AbortSignal | undefined; retries?: number } = {}): Promise<T> {
    return pRetry(
      async () => {
        let res: { status: number; text: string };
        try {
          res = await this.send(method, path, o.body, o.timeoutMs ?? this.timeoutMs);
        } catch (err) {
          throw new ImdsError(`IMDS ${method} ${path.split('?')[0]}: ${(err as Error).message}`, null); // network or timeout: retried
        }
        if (res.status >= 200 && res.status < 300) {
          try {
            return (res.text ? JSON.parse(res.text) : {}) as T;
          } catch {
            throw new AbortError(new ImdsError(`IMDS ${method} ${path.split('?')[0]}: the answer is not JSON`, res.status));
          }
        }
        const err = new ImdsError(`IMDS ${method} ${path.split('?')[0]} answered ${res.status}: ${describeBody(res.text)}`, res.status);
        if (isTransient(res.status)) throw err;
        throw new AbortError(err);
      },
      {
        retries: o.retries ?? this.retries,
        minTimeout: 500,
        factor: 2,
        maxTimeout: 10_000,
        randomize: true,
        ...(o.signal ? { signal: o.signal } : {}),
        onFailedAttempt: ({ error, attemptNumber, retriesLeft }) => {
          if (retriesLeft > 0) this.log.warn({ err: error.message, attempt: attemptNumber, retriesLeft }, 'IMDS request failed; retrying');
        },
      },
    );
  }

  private send(method: string, path: string, body: unknown, timeoutMs: number): Promise<{ status: number; text: string }> {
    const url = new URL(path, `${this.baseUrl}/`);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = request(
        url,
        {
          method,
          agent: false, // no keep-alive pool and, above all, no proxy
          headers: { Metadata: 'true', ...(payload ? { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(payload) } : {}) },
          timeout: timeoutMs,
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (text += d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs}ms`)));
      req.on('error', reject);
      req.end(payload);
    });
  }
}

function describeBody(text: string): string {
  try {
    const j = JSON.parse(text) as { error?: unknown; error_description?: unknown };
    if (typeof j.error === 'string') return j.error;
    if (typeof j.error_description === 'string') return j.error_description;
  } catch {
    // not JSON
  }
  return text.slice(0, 200) || '(empty body)';
}

function toComputeFacts(c: Partial<ComputeFacts> | undefined): ComputeFacts {
  if (!c || typeof c.resourceId !== 'string' || typeof c.name !== 'string') {
    throw new ImdsError('IMDS instance metadata has no compute.resourceId or compute.name', 200);
  }
  const s = (v: unknown): string => (typeof v === 'string' ? v : '');
  return {
    name: c.name,
    vmId: s(c.vmId),
    resourceId: c.resourceId,
    subscriptionId: s(c.subscriptionId),
    resourceGroupName: s(c.resourceGroupName),
    location: s(c.location),
    vmSize: s(c.vmSize),
    zone: s(c.zone),
    priority: s(c.priority),
    vmScaleSetName: s(c.vmScaleSetName),
    osType: s(c.osType),
  };
}
