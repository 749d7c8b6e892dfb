/**
 * Reads the input of `pullman submit`: NDJSON TaskSpecs, a JSON array of them, or (with
 * `--lines`) one shell command per line. Every spec is checked here with the same schema and
 * rules the manager applies, so a mistake is reported with its line before anything is sent.
 */
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { PullmanError, TaskSpec as TaskSpecSchema, compileChecker, resolveTaskSpec, type TaskSpec } from '@pullman/protocol';
import { CliError } from './errors.js';

export interface InputSource {
  /** Shown in error messages: the file name, or `stdin`. */
  name: string;
  open(): Readable;
}

export function fileSource(path: string): InputSource {
  if (path === '-') return { name: 'stdin', open: () => process.stdin };
  return { name: path, open: () => createReadStream(path) };
}

const checker = compileChecker(TaskSpecSchema, 'INVALID_INPUT', 'task');

/** Checks one parsed value as a TaskSpec; `where` names it in the error (`tasks.ndjson line 4`). */
function checkSpec(value: unknown, where: string): TaskSpec {
  try {
    const spec = checker.parse(value);
    resolveTaskSpec(spec, undefined, where);
    return spec;
  } catch (err) {
    if (err instanceof PullmanError) throw new CliError(err.message.replace(/^task(?=[.:])/, where), 2);
    throw err;
  }
}

/** Non-blank lines with their 1-based numbers; a missing or unreadable file is a usage error. */
async function* numberedLines(source: InputSource): AsyncGenerator<{ text: string; lineNo: number }> {
  const stream = source.open();
  const lines = createInterface({ input: stream, crlfDelay: Infinity });
  let lineNo = 0;
  try {
    for await (const text of lines) {
      lineNo++;
      yield { text, lineNo };
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new CliError(`${source.name}: cannot be read (${code ?? (err as Error).message})`, 2);
  } finally {
    lines.close();
    if (source.name !== 'stdin') stream.destroy();
  }
}

/**
 * Yields the TaskSpecs of a submit input, checked. `--lines` turns each line into
 * `{key: "line-N", shell: LINE}` (N is the line's number in the file, so resubmitting the same
 * file into the same job is idempotent), skipping blank lines and `#` comments.
 */
export async function* readTaskSpecs(source: InputSource, opts: { lines: boolean }): AsyncGenerator<TaskSpec> {
  if (opts.lines) {
    for await (const { text, lineNo } of numberedLines(source)) {
      const shell = text.trim();
      if (shell === '' || shell.startsWith('#')) continue;
      yield checkSpec({ key: `line-${lineNo}`, shell }, `${source.name} line ${lineNo}`);
    }
    return;
  }
  let arrayText: string[] | null = null;
  for await (const { text, lineNo } of numberedLines(source)) {
    if (arrayText) {
      arrayText.push(text);
      continue;
    }
    const trimmed = text.trim();
    if (trimmed === '') continue;
    if (trimmed.startsWith('[')) {
      // A JSON array has to be read whole to be parsed; NDJSON never is.
      arrayText = [text];
      continue;
    }
    let value: unknown;
    try {
      value = JSON.parse(trimmed);
    } catch {
      throw new CliError(`${source.name} line ${lineNo}: not valid JSON (expected one TaskSpec object per line, a JSON array, or --lines for shell commands)`, 2);
    }
    yield checkSpec(value, `${source.name} line ${lineNo}`);
  }
  if (arrayText) {
    let value: unknown;
    try {
      value = JSON.parse(arrayText.join('\n'));
    } catch (err) {
      throw new CliError(`${source.name}: not a valid JSON array (${(err as Error).message})`, 2);
    }
    if (!Array.isArray(value)) throw new CliError(`${source.name}: expected a JSON array of TaskSpecs`, 2);
    for (const [i, item] of value.entries()) yield checkSpec(item, `${source.name}[${i}]`);
  }
}
