import Type from 'typebox';
import { ErrorResponse, PullmanError, parseJobId, parseTaskId } from '@pullman/protocol';

export const IdParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 128 }) });

/** Rowid behind a job id; an id of the wrong shape is simply unknown (404), not malformed. */
export function jobSeqOf(id: string): number {
  const seq = parseJobId(id);
  if (seq === null) throw new PullmanError('JOB_NOT_FOUND', `job ${id} does not exist`);
  return seq;
}

export function taskSeqOf(id: string): number {
  const seq = parseTaskId(id);
  if (seq === null) throw new PullmanError('TASK_NOT_FOUND', `task ${id} does not exist`);
  return seq;
}

/** OpenAPI response entries for the error statuses a route can answer. */
export function errorResponses(...codes: number[]): Record<number, typeof ErrorResponse> {
  const out: Record<number, typeof ErrorResponse> = {};
  for (const c of [401, 403, ...codes]) out[c] = ErrorResponse;
  return out;
}
