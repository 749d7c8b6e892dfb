import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import { afterEach, describe, expect, it } from 'vitest';
import { defaultWorkerBundle, loadManagerConfig } from '../src/config.js';
import { ADMIN, WORKER, auth, startManager, type TestManager } from './helpers.js';
import { TestWorker } from './ws-client.js';

let m: TestManager | undefined;
afterEach(async () => {
  await m?.close();
  m = undefined;
});

function bundleFile(content: string): string {
  const file = join(mkdtempSync(join(tmpdir(), 'pullman-bundle-')), 'pullman-worker.cjs');
  writeFileSync(file, content);
  return file;
}

describe('GET /v1/worker/bundle', () => {
  it('serves the bundle to the worker token, with an ETag and the version', async () => {
    const body = '#!/usr/bin/env node\nconsole.log("worker");\n';
    const file = bundleFile(body);
    m = await startManager({ workerBundle: file });
    const res = await request(m.app.server).get('/v1/worker/bundle').set(auth(WORKER)).buffer(true).parse((r, cb) => {
      let data = '';
      r.on('data', (c: Buffer) => (data += c.toString()));
      r.on('end', () => cb(null, data));
    });
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^application\/javascript/);
    expect(res.headers['x-pullman-version']).toBe(m.app.pullman.version);
    expect(res.headers.etag).toMatch(/^"sha256-[A-Za-z0-9_-]{43}"$/);
    expect(res.body).toBe(body);

    // A conditional GET with the same ETag is answered 304; a changed file gets a new ETag.
    const again = await request(m.app.server).get('/v1/worker/bundle').set(auth(WORKER)).set('If-None-Match', res.headers.etag as string);
    expect(again.status).toBe(304);
    writeFileSync(file, `${body}// v2 with a different length\n`);
    const changed = await request(m.app.server).get('/v1/worker/bundle').set(auth(WORKER));
    expect(changed.status).toBe(200);
    expect(changed.headers.etag).not.toBe(res.headers.etag);
  });

  it('needs the worker token: 401 without one, 403 with the admin token', async () => {
    m = await startManager({ workerBundle: bundleFile('x') });
    const none = await request(m.app.server).get('/v1/worker/bundle');
    expect(none.status).toBe(401);
    expect(none.body.error.code).toBe('UNAUTHORIZED');
    const admin = await request(m.app.server).get('/v1/worker/bundle').set(auth(ADMIN));
    expect(admin.status).toBe(403);
    expect(admin.body.error.code).toBe('FORBIDDEN');
  });

  it('answers 404 with the standard error body when the bundle is missing', async () => {
    m = await startManager({ workerBundle: join(tmpdir(), 'no-such-dir-pullman', 'pullman-worker.cjs') });
    const res = await request(m.app.server).get('/v1/worker/bundle').set(auth(WORKER));
    expect(res.status).toBe(404);
    expect(res.body).toEqual({ error: { code: 'WORKER_BUNDLE_NOT_FOUND', message: expect.stringContaining('PULLMAN_WORKER_BUNDLE') } });
    await m.close();
    m = await startManager();
    const unset = await request(m.app.server).get('/v1/worker/bundle').set(auth(WORKER));
    expect(unset.status).toBe(404);
    expect(unset.body.error.code).toBe('WORKER_BUNDLE_NOT_FOUND');
  });

  it('leaves GET /v1/worker as the worker channel', async () => {
    m = await startManager({ listen: true, workerBundle: bundleFile('x') });
    const plain = await request(m.app.server).get('/v1/worker').set(auth(WORKER));
    expect(plain.status).toBe(400);
    expect(plain.body.error.code).toBe('INVALID_INPUT');
    const w = await TestWorker.connect(m.url, WORKER);
    w.ws.terminate();
  });

  it('is set by --worker-bundle / PULLMAN_WORKER_BUNDLE, else found next to the manager', () => {
    expect(loadManagerConfig(['--worker-bundle', '/opt/w.cjs'], {}).workerBundle).toBe('/opt/w.cjs');
    expect(loadManagerConfig([], { PULLMAN_WORKER_BUNDLE: '/srv/w.cjs' }).workerBundle).toBe('/srv/w.cjs');
    // A release keeps the bundle beside the manager; the repository keeps it in apps/worker/dist.
    const release = mkdtempSync(join(tmpdir(), 'pullman-rel-'));
    writeFileSync(join(release, 'pullman-worker.cjs'), 'x');
    expect(defaultWorkerBundle(release)).toBe(join(release, 'pullman-worker.cjs'));
    expect(defaultWorkerBundle('/repo/apps/manager/dist')).toBe('/repo/apps/worker/dist/pullman-worker.cjs');
    expect(loadManagerConfig([], {}).workerBundle).toMatch(/pullman-worker\.cjs$/);
  });
});
