import type { Readable } from 'node:stream';
import { PullmanError } from '@pullman/protocol';

export const NDJSON_CONTENT_TYPE = 'application/x-ndjson';

/** Longest NDJSON line accepted: one TaskSpec; a longer line is a mistake, not a task. */
export const MAX_NDJSON_LINE_BYTES = 1024 * 1024;

/**
 * Splits a byte stream into lines without ever holding more than one line (plus one chunk)
 * in memory. Yields each non-blank line with its 1-based number; throws PAYLOAD_TOO_LARGE
 * for a line over the limit.
 */
export async function* ndjsonLines(stream: Readable, maxLineBytes = MAX_NDJSON_LINE_BYTES): AsyncGenerator<{ text: string; lineNo: number }> {
  let parts: Buffer[] = [];
  let partBytes = 0;
  let lineNo = 0;
  const take = (tail: Buffer): string => {
    const line = parts.length === 0 ? tail : Buffer.concat([...parts, tail]);
    parts = [];
    partBytes = 0;
    return line.toString('utf8');
  };
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    let start = 0;
    for (let nl = chunk.indexOf(10, start); nl !== -1; nl = chunk.indexOf(10, start)) {
      lineNo++;
      if (partBytes + (nl - start) > maxLineBytes) throw tooLong(lineNo, maxLineBytes);
      const text = take(chunk.subarray(start, nl));
      start = nl + 1;
      if (text.trim() !== '') yield { text, lineNo };
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      partBytes += rest.length;
      if (partBytes > maxLineBytes) throw tooLong(lineNo + 1, maxLineBytes);
      parts.push(rest);
    }
  }
  if (partBytes > 0) {
    const text = take(Buffer.alloc(0));
    if (text.trim() !== '') yield { text, lineNo: lineNo + 1 };
  }
}

const tooLong = (lineNo: number, max: number): PullmanError =>
  new PullmanError('PAYLOAD_TOO_LARGE', `line ${lineNo}: longer than ${max} bytes`);
