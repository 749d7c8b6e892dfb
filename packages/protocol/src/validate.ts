import { Compile } from 'typebox/compile';
import type { TSchema, Static } from 'typebox';
import { PullmanError, type ErrorCode } from './errors.js';

export interface Checker<T> {
  /** Returns the value typed, or throws PullmanError(code) with the first problem found. */
  parse(value: unknown): T;
  check(value: unknown): value is T;
}

/**
 * Compiles a schema once into a fast checker. Error messages name the JSON path, because
 * "must be integer" without a path is useless in a 100,000-line upload.
 */
export function compileChecker<S extends TSchema>(schema: S, code: ErrorCode = 'INVALID_INPUT', root = 'value'): Checker<Static<S>> {
  const validator = Compile(schema);
  const branches = discriminatedBranches(schema);
  return {
    check: (value: unknown): value is Static<S> => validator.Check(value),
    parse(value: unknown): Static<S> {
      if (validator.Check(value)) return value as Static<S>;
      if (branches) throw new PullmanError(code, describeUnionError(branches, value, root));
      throw new PullmanError(code, describeFirstError(validator.Errors(value), root));
    },
  };
}

type Validator = ReturnType<typeof Compile>;

/**
 * A union of objects told apart by a literal `type` (the worker-channel messages): problems are
 * reported against the branch the value names, not whichever branch the validator tried first.
 * Without this, `{"type":"pull","credits":2,"x":1}` was reported as `unknown field "credits", "x"`
 * (the hello branch's complaint) and an unknown type as missing hello's fields.
 */
function discriminatedBranches(schema: TSchema): Map<string, Validator> | null {
  const anyOf = (schema as { anyOf?: unknown }).anyOf;
  if (!Array.isArray(anyOf) || anyOf.length === 0) return null;
  const map = new Map<string, Validator>();
  for (const member of anyOf as TSchema[]) {
    const tag = (member as { properties?: { type?: { const?: unknown } } }).properties?.type?.const;
    if (typeof tag !== 'string' || map.has(tag)) return null;
    map.set(tag, Compile(member));
  }
  return map;
}

function describeUnionError(branches: Map<string, Validator>, value: unknown, root: string): string {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return `${root}: must be object`;
  const tag = (value as { type?: unknown }).type;
  const branch = typeof tag === 'string' ? branches.get(tag) : undefined;
  if (!branch) {
    const known = [...branches.keys()].map((t) => JSON.stringify(t)).join(', ');
    return `${root}.type: must be one of ${known} (got ${tag === undefined ? 'none' : JSON.stringify(tag)})`;
  }
  return describeFirstError(branch.Errors(value), root);
}

/** One readable line for the first (most useful) problem, e.g. `body.tasks.3: unknown field "comand"`. */
export function describeFirstError(errors: ReadonlyArray<{ instancePath: string; message: string; keyword: string; params: object }>, root = 'value'): string {
  const first = errors.find((e) => e.keyword === 'additionalProperties') ?? errors[0];
  if (!first) return 'invalid value';
  const where = root + first.instancePath.replaceAll('/', '.');
  if (first.keyword === 'additionalProperties') {
    const extra = (first.params as { additionalProperties?: string[] }).additionalProperties ?? [];
    return `${where}: unknown field ${extra.map((f) => JSON.stringify(f)).join(', ')}`;
  }
  return `${where}: ${first.message}`;
}
