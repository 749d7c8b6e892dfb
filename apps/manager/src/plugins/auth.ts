/**
 * Bearer-token auth for /v1. Each route declares the role it needs in `config.role`
 * (default admin). Tokens are matched in constant time and never logged.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { PullmanError } from '@pullman/protocol';
import { bearerToken } from '../tokens.js';

export async function authHook(request: FastifyRequest, reply: FastifyReply): Promise<void> {
  const needed = request.routeOptions.config.role ?? 'admin';
  if (needed === 'public') return;
  const token = bearerToken(request.headers.authorization);
  if (token === null) throw new PullmanError('UNAUTHORIZED', 'missing bearer token (Authorization: Bearer <token>)');
  const role = request.server.pullman.auth.roleOf(token);
  if (role === null) throw new PullmanError('UNAUTHORIZED', 'invalid token');
  if (role !== needed) throw new PullmanError('FORBIDDEN', `this route needs the ${needed} token, not the ${role} token`);
  void reply;
}
