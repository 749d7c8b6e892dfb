/**
 * The admin API as the dashboard uses it, and the token kept for this browser tab.
 * sessionStorage: the token survives reloads of the tab but not closing it, and no other tab
 * or site sees it.
 */
import type { LiveEvent } from '../live-events.js';

const TOKEN_KEY = 'pullman.adminToken';

export const token = {
  get: (): string | null => sessionStorage.getItem(TOKEN_KEY),
  set: (t: string): void => sessionStorage.setItem(TOKEN_KEY, t),
  clear: (): void => sessionStorage.removeItem(TOKEN_KEY),
};

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** GET a /v1 path with the token; throws ApiError with the API's code and message. */
export async function get<T>(path: string, with_: string | null = token.get()): Promise<T> {
  let res: Response;
  try {
    res = await fetch(path, { headers: { authorization: `Bearer ${with_ ?? ''}`, accept: 'application/json' }, cache: 'no-store' });
  } catch (err) {
    throw new ApiError(0, 'UNREACHABLE', `cannot reach the manager (${(err as Error).message})`);
  }
  const text = await res.text();
  if (!res.ok) {
    let code = `HTTP_${res.status}`;
    let message = text.slice(0, 200) || res.statusText;
    try {
      const body = JSON.parse(text) as { error?: { code?: string; message?: string } };
      code = body.error?.code ?? code;
      message = body.error?.message ?? message;
    } catch {
      // not JSON: keep the text
    }
    throw new ApiError(res.status, code, message);
  }
  return JSON.parse(text) as T;
}

export type FeedStatus = 'connecting' | 'live' | 'reconnecting';

export interface FeedHandlers {
  event(e: LiveEvent): void;
  status(s: FeedStatus): void;
  /** The token was refused (401/403): the feed stops. */
  unauthorized(err: ApiError): void;
}

/**
 * Reads GET /v1/events with fetch, so the token travels in the Authorization header (an
 * EventSource could only put it in the URL, where proxies and logs keep it). Reconnects with
 * backoff until stopped.
 */
export class LiveFeed {
  private abort = new AbortController();
  private stopped = false;

  constructor(
    private readonly tokenValue: string,
    private readonly on: FeedHandlers,
  ) {}

  start(): void {
    void this.run();
  }

  stop(): void {
    this.stopped = true;
    this.abort.abort();
  }

  private async run(): Promise<void> {
    let backoffMs = 500;
    while (!this.stopped) {
      this.on.status(backoffMs === 500 ? 'connecting' : 'reconnecting');
      try {
        const res = await fetch('/v1/events', { headers: { authorization: `Bearer ${this.tokenValue}`, accept: 'text/event-stream' }, cache: 'no-store', signal: this.abort.signal });
        if (res.status === 401 || res.status === 403) {
          const body = (await res.json().catch(() => ({}))) as { error?: { code?: string; message?: string } };
          this.on.unauthorized(new ApiError(res.status, body.error?.code ?? 'UNAUTHORIZED', body.error?.message ?? 'token refused'));
          return;
        }
        if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
        await this.read(res.body, () => {
          backoffMs = 500;
          this.on.status('live');
        });
      } catch {
        // dropped or refused: retry below
      }
      if (this.stopped) return;
      this.on.status('reconnecting');
      await new Promise((r) => setTimeout(r, backoffMs));
      backoffMs = Math.min(backoffMs * 2, 8_000);
    }
  }

  private async read(body: ReadableStream<Uint8Array>, opened: () => void): Promise<void> {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end: number;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = 'message';
        const data: string[] = [];
        for (const line of frame.split('\n')) {
          if (line.startsWith('event:')) event = line.slice(6).trim();
          else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
        }
        if (event !== 'hello' && event !== 'tick') continue;
        if (event === 'hello') opened();
        this.on.event({ event, data: JSON.parse(data.join('\n')) } as LiveEvent);
      }
    }
  }
}
