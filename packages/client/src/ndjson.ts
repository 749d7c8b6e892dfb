import type { TaskSpec } from '@pullman/protocol';

export const NDJSON_CONTENT_TYPE = 'application/x-ndjson';

/**
 * What `PullmanClient.streamTasks` accepts, item by item:
 * - a TaskSpec object: serialized as one line;
 * - a string: one NDJSON line (a trailing newline is added if missing);
 * - a Uint8Array/Buffer: raw NDJSON bytes passed through as they are (e.g. the chunks of
 *   `fs.createReadStream('tasks.ndjson')`, which do not fall on line boundaries).
 */
export type TaskSource = Iterable<TaskSpec | string | Uint8Array> | AsyncIterable<TaskSpec | string | Uint8Array>;

/** Bytes gathered before a chunk goes on the wire: one write per ~64 KiB, not per task. */
const CHUNK_BYTES = 64 * 1024;

/** Encodes a TaskSource as a byte stream of NDJSON, never holding more than one chunk. */
export async function* encodeNdjson(source: TaskSource): AsyncGenerator<Uint8Array> {
  const encoder = new TextEncoder();
  let pending: string[] = [];
  let pendingLength = 0;
  const flush = (): Uint8Array => {
    const bytes = encoder.encode(pending.join(''));
    pending = [];
    pendingLength = 0;
    return bytes;
  };
  for await (const item of source as AsyncIterable<TaskSpec | string | Uint8Array>) {
    if (item instanceof Uint8Array) {
      if (pendingLength) yield flush();
      yield item;
      continue;
    }
    const line = typeof item === 'string' ? item : JSON.stringify(item);
    const text = line.endsWith('\n') ? line : `${line}\n`;
    pending.push(text);
    pendingLength += text.length;
    if (pendingLength >= CHUNK_BYTES) yield flush();
  }
  if (pendingLength) yield flush();
}

/** Splits a byte stream into non-blank lines (without the newline). */
export async function* splitLines(body: AsyncIterable<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let rest = '';
  for await (const chunk of body) {
    rest += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = rest.indexOf('\n')) !== -1) {
      const line = rest.slice(0, nl);
      rest = rest.slice(nl + 1);
      if (line.trim() !== '') yield line;
    }
  }
  rest += decoder.decode();
  if (rest.trim() !== '') yield rest;
}
