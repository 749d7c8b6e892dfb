import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ImdsClient, ImdsError } from '../src/imds.js';
import { FakeAzure, UNIFORM_VM, resourceIdOf } from '../../../test/fakes/fake-azure.js';

let azure: FakeAzure;
beforeAll(async () => {
  azure = await FakeAzure.start(UNIFORM_VM);
});
afterAll(() => azure.stop());
beforeEach(() => {
  azure.requests.length = 0;
});

// Short backoff so retries stay quick; the retry policy itself is what is under test.
const client = (retries = 3) => new ImdsClient({ baseUrl: azure.imdsUrl, retries, timeoutMs: 1_000 });

describe('ImdsClient', () => {
  it('reads typed compute facts with the Metadata header and the 2021-02-01 api-version', async () => {
    const facts = await client().instance();
    expect(facts).toMatchObject({ name: 'pull_3', resourceId: resourceIdOf(UNIFORM_VM), subscriptionId: UNIFORM_VM.subscriptionId, resourceGroupName: 'rg-pullman', vmScaleSetName: 'pull', vmSize: 'Standard_D4s_v5', zone: '2', priority: 'Spot', location: 'westeurope', osType: 'Linux' });
    const [req] = azure.requests;
    expect(req).toMatchObject({ method: 'GET', path: '/metadata/instance', query: { 'api-version': '2021-02-01' } });
    expect(req!.headers.metadata).toBe('true');
  });

  it.each([410, 429, 500, 503])('retries a %i and then succeeds', async (status) => {
    azure.imdsInstanceScript.push({ status }, { status });
    const facts = await client().instance();
    expect(facts.name).toBe('pull_3');
    expect(azure.requests.filter((r) => r.path === '/metadata/instance')).toHaveLength(3);
  });

  it('gives up after its retries with the last status', async () => {
    azure.imdsInstanceScript.push({ status: 500 }, { status: 500 }, { status: 500 });
    const err = await client(2).instance().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ImdsError);
    expect((err as ImdsError).status).toBe(500);
    azure.imdsInstanceScript.length = 0;
  });

  it('fails at once with a clear error on 400, without retrying', async () => {
    azure.imdsInstanceScript.push({ status: 400, body: { error: 'Bad request. api-version is invalid or was not specified in the request.' } });
    const err = (await client().instance().catch((e: unknown) => e)) as ImdsError;
    expect(err).toBeInstanceOf(ImdsError);
    expect(err.status).toBe(400);
    expect(err.message).toContain('answered 400: Bad request. api-version is invalid');
    expect(azure.requests.filter((r) => r.path === '/metadata/instance')).toHaveLength(1);
  });

  it('retries a request that times out', async () => {
    // A server that never answers the first request, then the fake answers.
    const { createServer } = await import('node:http');
    let calls = 0;
    const slow = createServer((req, res) => {
      calls++;
      if (calls === 1) return; // hang
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ compute: { name: 'n', resourceId: '/x' } }));
    }).listen(0, '127.0.0.1');
    await new Promise((r) => slow.once('listening', r));
    const port = (slow.address() as { port: number }).port;
    try {
      const facts = await new ImdsClient({ baseUrl: `http://127.0.0.1:${port}`, timeoutMs: 300, retries: 2 }).instance();
      expect(facts.name).toBe('n');
      expect(calls).toBe(2);
    } finally {
      slow.closeAllConnections();
      slow.close();
    }
  });

  it('never goes through a proxy, whatever the environment says', async () => {
    const saved = { ...process.env };
    process.env.HTTP_PROXY = 'http://127.0.0.1:9';
    process.env.http_proxy = 'http://127.0.0.1:9';
    process.env.NODE_USE_ENV_PROXY = '1';
    try {
      expect((await client(0).instance()).name).toBe('pull_3');
    } finally {
      process.env = saved;
    }
  });

  it('probes availability once with a short timeout', async () => {
    expect(await client().available()).toBe(true);
    expect(await new ImdsClient({ baseUrl: 'http://127.0.0.1:9' }).available(500)).toBe(false);
  });

  it('reads Scheduled Events and posts approvals as StartRequests', async () => {
    azure.publishEvents([{ EventId: 'E1', EventType: 'Reboot', ResourceType: 'VirtualMachine', Resources: ['pull_3'], EventStatus: 'Scheduled', NotBefore: '' }]);
    const doc = await client().scheduledEvents();
    expect(doc.Events.map((e) => e.EventId)).toEqual(['E1']);
    expect(azure.requests.at(-1)!.query['api-version']).toBe('2020-07-01');
    await client().approveEvents(['E1']);
    expect(azure.approvals).toEqual(['E1']);
    expect(JSON.parse(azure.requests.at(-1)!.body)).toEqual({ StartRequests: [{ EventId: 'E1' }] });
  });
});
