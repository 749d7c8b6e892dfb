/**
 * NDJSON uploads at scale: 100,000 tasks streamed in one request, idempotent resubmission,
 * and paging through all of them; plus bodies that arrive in awkward chunks.
 */
import { request as httpRequest } from 'node:http';
import type { Response } from 'supertest';
import { afterEach, describe, expect, it } from 'vitest';
import { auth, startManager, type TestManager } from './helpers.js';
import { NDJSON, api, createJob, ndjsonGet } from './api-support.js';

let m: TestManager | undefined;
afterEach(async () => {
  await m?.close();
  m = undefined;
});

const N = 100_000;

describe('a 100,000-task NDJSON upload', () => {
  it('is accepted, is all duplicates the second time, and pages back completely in order', async () => {
    m = await startManager();
    const job = await createJob(m, { name: 'big', open: true, defaults: { shell: 'run.sh' } });
    const lines: string[] = new Array(N);
    for (let i = 0; i < N; i++) lines[i] = `{"key":"k${i}","env":{"I":"${i}"}}`;
    const body = Buffer.from(lines.join('\n') + '\n');

    const first = await api(m).post(`/v1/jobs/${job.id}/tasks`).set(auth()).set('Content-Type', NDJSON).send(body);
    expect(first.status, first.text).toBe(200);
    expect(first.body).toEqual({ accepted: N, duplicates: 0 });

    const second = await api(m).post(`/v1/jobs/${job.id}/tasks`).set(auth()).set('Content-Type', NDJSON).send(body);
    expect(second.status, second.text).toBe(200);
    expect(second.body).toEqual({ accepted: 0, duplicates: N });

    const got = await api(m).get(`/v1/jobs/${job.id}`).set(auth());
    expect(got.body.counts).toEqual({ queued: N, running: 0, succeeded: 0, failed: 0, cancelled: 0, total: N });

    const ids = new Set<string>();
    let previous = 0;
    let expectedKey = 0;
    let pages = 0;
    let cursor: string | null = null;
    do {
      const res: Response = await api(m)
        .get(`/v1/jobs/${job.id}/tasks`)
        .query({ limit: 1000, ...(cursor ? { cursor } : {}) })
        .set(auth());
      expect(res.status).toBe(200);
      pages++;
      expect(res.body.tasks.length).toBe(1000);
      for (const t of res.body.tasks as Array<{ id: string; key: string; jobId: string; spec: { env: Record<string, string>; shell: string } }>) {
        const seq = Number(t.id.slice('task-'.length));
        expect(seq).toBeGreaterThan(previous); // strictly increasing: submission order
        previous = seq;
        ids.add(t.id);
        if (t.key !== `k${expectedKey}`) expect(t.key).toBe(`k${expectedKey}`); // cheap check, loud failure
        if (t.spec.env.I !== String(expectedKey) || t.spec.shell !== 'run.sh' || t.jobId !== job.id) {
          expect({ env: t.spec.env, shell: t.spec.shell, jobId: t.jobId }).toEqual({ env: { I: String(expectedKey) }, shell: 'run.sh', jobId: job.id });
        }
        expectedKey++;
      }
      cursor = res.body.nextCursor;
    } while (cursor);
    expect(pages).toBe(N / 1000);
    expect(ids.size).toBe(N);
    expect(expectedKey).toBe(N);
  }, 120_000);
});

describe('NDJSON streaming', () => {
  it('handles lines and multi-byte characters split across arbitrary chunks', async () => {
    m = await startManager({ listen: true });
    const job = await createJob(m, { open: true });
    const text = ['{"key":"é-1","shell":"echo ünïcødé ✓"}', '', '{"key":"ß-2","command":["printf","日本語"]}', '{"key":"3","shell":"x"}'].join('\n');
    const bytes = Buffer.from(text);
    // Chunks of 1 to 7 bytes: every line and several characters are cut in the middle.
    const chunks: Buffer[] = [];
    for (let i = 0, size = 1; i < bytes.length; i += size, size = (size % 7) + 1) chunks.push(bytes.subarray(i, i + size));

    const url = new URL(`/v1/jobs/${job.id}/tasks`, m.url);
    const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = httpRequest(url, { method: 'POST', headers: { ...auth(), 'Content-Type': NDJSON, 'Transfer-Encoding': 'chunked' } }, (res) => {
        let out = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (out += c));
        res.on('end', () => resolve({ status: res.statusCode!, body: out }));
      });
      req.on('error', reject);
      // Each write is flushed as its own HTTP chunk; the next one waits for the drain of the last.
      const writeNext = (i: number): void => {
        if (i === chunks.length) {
          req.end();
          return;
        }
        if (req.write(chunks[i])) setImmediate(() => writeNext(i + 1));
        else req.once('drain', () => writeNext(i + 1));
      };
      writeNext(0);
    });
    expect(status, body).toBe(200);
    expect(JSON.parse(body)).toEqual({ accepted: 3, duplicates: 0 });

    const tasks = (await api(m).get(`/v1/jobs/${job.id}/tasks`).set(auth())).body.tasks as Array<{ key: string; spec: Record<string, unknown> }>;
    expect(tasks.map((t) => [t.key, t.spec])).toEqual([
      ['é-1', { key: 'é-1', shell: 'echo ünïcødé ✓' }],
      ['ß-2', { key: 'ß-2', command: ['printf', '日本語'] }],
      ['3', { key: '3', shell: 'x' }],
    ]);
  });

  it('an empty NDJSON body adds nothing', async () => {
    m = await startManager();
    const job = await createJob(m, { open: true });
    for (const body of ['', '\n', '\n\n  \n']) {
      const res = await api(m).post(`/v1/jobs/${job.id}/tasks`).set(auth()).set('Content-Type', NDJSON).send(body);
      expect(res.status, res.text).toBe(200);
      expect(res.body).toEqual({ accepted: 0, duplicates: 0 });
    }
    const { lines } = await ndjsonGet(m, `/v1/jobs/${job.id}/results`);
    expect(lines).toEqual([]);
  });
});
