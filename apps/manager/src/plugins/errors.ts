/**
 * Every failure leaves as `{"error":{"code","message"}}` with a status from ERROR_CODES.
 * Fastify's own errors (body too large, bad JSON, validation) are translated here, in one
 * place, so no route needs a try/catch for the shape.
 */
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { ERROR_CODES, PullmanError, type ErrorCode } from '@pullman/protocol';

const FASTIFY_CODES: Record<string, ErrorCode> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'INVALID_INPUT',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'INVALID_INPUT',
  FST_ERR_CTP_INVALID_JSON_BODY: 'INVALID_INPUT',
  FST_ERR_VALIDATION: 'INVALID_INPUT',
  FST_ERR_BAD_URL: 'INVALID_INPUT',
  // A path parameter longer than the router accepts is a malformed path parameter (not 414).
  FST_ERR_MAX_PARAM_LENGTH: 'INVALID_INPUT',
};

export function toPullmanError(err: FastifyError | Error): PullmanError {
  if (err instanceof PullmanError) return err;
  const code = (err as { code?: string }).code;
  if (code === 'SQLITE_FULL') return new PullmanError('STORAGE_FULL', 'the manager database disk is full; nothing was stored, retry when space is freed');
  if (code && FASTIFY_CODES[code]) return new PullmanError(FASTIFY_CODES[code], err.message);
  if (err instanceof SyntaxError) return new PullmanError('INVALID_INPUT', `body: ${err.message}`);
  const status = (err as FastifyError).statusCode;
  if (status === 413) return new PullmanError('PAYLOAD_TOO_LARGE', err.message);
  if (status === 415) return new PullmanError('UNSUPPORTED_MEDIA_TYPE', err.message);
  if (status === 503) return new PullmanError('UNAVAILABLE', err.message);
  if (status !== undefined && status >= 400 && status < 500) return new PullmanError('INVALID_INPUT', err.message);
  return new PullmanError('INTERNAL', 'internal error; the manager log has the details', { cause: err });
}

export function errorHandler(err: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  const e = toPullmanError(err);
  if (e.status >= 500) request.log.error({ err }, 'request failed');
  // Failed authentication is logged by the auth hook, once per address per window: a log line
  // per attempt would let anyone without a token fill the disk.
  else if (e.code !== 'UNAUTHORIZED' && e.code !== 'RATE_LIMITED') request.log.info({ code: e.code, msg: e.message }, 'request rejected');
  void reply.status(ERROR_CODES[e.code].status).send(e.toBody());
}

export function notFoundHandler(request: FastifyRequest, reply: FastifyReply): void {
  void reply.status(404).send(new PullmanError('ROUTE_NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0]}`).toBody());
}
