import { parseDuration } from './duration.js';
import { PullmanError } from './errors.js';
import type { TaskDefaults, TaskSpec } from './schemas.js';

/**
 * Deepest nesting of arrays and objects accepted in free-form JSON: a task's `meta`, a task's
 * output. Why: JSON.parse takes any depth, but JSON.stringify recurses and overflows the stack
 * somewhere past 4,000 levels; a deeper value could be received, but never stored or sent.
 * 2,000 leaves room for the stack the serialiser starts from, and is far past any real use.
 */
export const MAX_JSON_DEPTH = 2_000;

/**
 * Whether `value` nests arrays and objects at most `max` levels deep (a scalar is 0, `[1]` is 1).
 * Iterative: it must not overflow the stack on the very values it exists to reject.
 */
export function jsonDepthWithin(value: unknown, max: number = MAX_JSON_DEPTH): boolean {
  if (value === null || typeof value !== 'object') return true;
  const stack: Array<[value: object, depth: number]> = [[value, 1]];
  for (let top = stack.pop(); top !== undefined; top = stack.pop()) {
    const [v, depth] = top;
    if (depth > max) return false;
    for (const child of Array.isArray(v) ? v : Object.values(v)) {
      if (child !== null && typeof child === 'object') stack.push([child as object, depth + 1]);
    }
  }
  return true;
}

/** The problem with the value at `where` when it nests deeper than MAX_JSON_DEPTH, or null. */
export function jsonDepthProblem(value: unknown, where: string): string | null {
  return jsonDepthWithin(value) ? null : `${where}: nested deeper than ${MAX_JSON_DEPTH} levels`;
}

/** Throws INVALID_TASK_SPEC naming `where` when `value` nests deeper than MAX_JSON_DEPTH. */
export function checkJsonDepth(value: unknown, where: string): void {
  const problem = jsonDepthProblem(value, where);
  if (problem) throw new PullmanError('INVALID_TASK_SPEC', problem);
}

/**
 * Applies job defaults under a task and enforces the rules JSON Schema cannot express.
 * Input has already passed the TaskSpec schema. Returns the spec as it will be stored.
 * `where` prefixes error messages (e.g. "tasks[17]" or "line 4052").
 */
export function resolveTaskSpec(spec: TaskSpec, defaults: TaskDefaults | undefined, where: string): TaskSpec {
  const merged: TaskSpec = defaults ? { ...defaults, ...spec } : { ...spec };
  if (defaults?.env && spec.env) merged.env = { ...defaults.env, ...spec.env };
  const hasCommand = merged.command !== undefined;
  const hasShell = merged.shell !== undefined;
  if (hasCommand === hasShell) {
    throw new PullmanError(
      'INVALID_TASK_SPEC',
      `${where}: exactly one of "command" and "shell" is required (got ${hasCommand ? 'both' : 'neither'})`,
    );
  }
  if (merged.timeout !== undefined) {
    const ms = parseDuration(merged.timeout, `${where}.timeout`);
    if (ms === 0) throw new PullmanError('INVALID_TASK_SPEC', `${where}.timeout: must be greater than 0`);
  }
  checkJsonDepth(merged.meta, `${where}.meta`);
  // No program can receive a NUL byte in its arguments, environment or working directory; the
  // spawn would throw on every worker the task reached.
  const nul = nulField(merged);
  if (nul !== null) throw new PullmanError('INVALID_TASK_SPEC', `${where}.${nul}: contains a NUL byte, which no process can be given`);
  return merged;
}

/** The first field of `spec` that a process would receive with a NUL byte in it, or null. */
function nulField(spec: TaskSpec): string | null {
  if (spec.key?.includes('\0')) return 'key'; // given to the process as PULLMAN_TASK_KEY
  const i = spec.command?.findIndex((a) => a.includes('\0')) ?? -1;
  if (i >= 0) return `command.${i}`;
  if (spec.shell?.includes('\0')) return 'shell';
  if (spec.cwd?.includes('\0')) return 'cwd';
  for (const [k, v] of Object.entries(spec.env ?? {})) if (v.includes('\0')) return `env.${k}`;
  return null;
}

/** Timeout of a stored spec in milliseconds, or null for none. */
export function taskTimeoutMs(spec: TaskSpec): number | null {
  return spec.timeout === undefined ? null : parseDuration(spec.timeout, 'timeout');
}

// ---- public ids ------------------------------------------------------------------------------
// Jobs and tasks are SQLite rowids inside the store; outside, they carry a prefix so that
// `pullman cancel ID` can tell a job from a task, and a log line is self-explanatory.

const JOB_PREFIX = 'job-';
const TASK_PREFIX = 'task-';

export const formatJobId = (seq: number): string => `${JOB_PREFIX}${seq}`;
export const formatTaskId = (seq: number): string => `${TASK_PREFIX}${seq}`;

function parseId(prefix: string, id: string): number | null {
  if (!id.startsWith(prefix)) return null;
  const digits = id.slice(prefix.length);
  if (!/^[1-9]\d{0,15}$/.test(digits)) return null;
  const n = Number(digits);
  return Number.isSafeInteger(n) ? n : null;
}

/** Returns the rowid behind a job id, or null if `id` is not a job id. */
export const parseJobId = (id: string): number | null => parseId(JOB_PREFIX, id);
/** Returns the rowid behind a task id, or null if `id` is not a task id. */
export const parseTaskId = (id: string): number | null => parseId(TASK_PREFIX, id);
