/**
 * The real worker binary against a fake Azure (IMDS over http, ARM over https with a
 * certificate made for the test) and a real manager: the readiness gate and Scheduled Events.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FLEXIBLE_VM, AUTHORIZATION_FAILED, FakeAzure, UNIFORM_VM, scheduledEvent } from './fakes/fake-azure.js';
import { finished, killAll, runWorkerToExit, startManager, startWorker, until, type ManagerHandle } from './harness.js';

let azure: FakeAzure;
afterEach(async () => {
  await killAll();
  await azure?.stop();
});

const azureEnv = (extra: Record<string, string> = {}) => ({ ...azure.env(), PULLMAN_READY: 'azure', PULLMAN_READY_INTERVAL: '200ms', ...extra });

async function waitReady(extra: Record<string, string> = {}) {
  return runWorkerToExit(['wait-ready'], { ...azureEnv(extra), PULLMAN_LOG_LEVEL: 'warn' });
}

describe('readiness gate on Azure', () => {
  let m: ManagerHandle;
  beforeEach(async () => {
    m = await startManager();
  });

  it('registers only after ARM reports Succeeded, and carries the VM facts', async () => {
    azure = await FakeAzure.start(UNIFORM_VM);
    azure.provisioningStates = ['Creating', 'Creating', 'Succeeded'];
    const w = startWorker(m, { name: 'ignored-on-azure', slots: 1, env: azureEnv({ PULLMAN_NAME: '' }) });
    const registered = await w.waitForLog((l) => l.msg === 'registered with the manager', 'registration');
    const gets = azure.armRequests();
    expect(gets.map((r) => r.path)).toEqual(Array(3).fill(`/subscriptions/${UNIFORM_VM.subscriptionId}/resourceGroups/rg-pullman/providers/Microsoft.Compute/virtualMachineScaleSets/pull/virtualMachines/3`));
    const [worker] = await m.api.workers();
    // Registration happened after the third GET, the first to answer Succeeded.
    expect(Date.parse(worker!.connectedAt!)).toBeGreaterThanOrEqual(gets[2]!.at);
    expect((registered.time as number)).toBeGreaterThanOrEqual(gets[2]!.at);
    expect(worker).toMatchObject({
      name: 'pull_3',
      vm: { resourceId: `/subscriptions/${UNIFORM_VM.subscriptionId}/resourceGroups/rg-pullman/providers/Microsoft.Compute/virtualMachineScaleSets/pull/virtualMachines/3`, scaleSet: 'pull', instanceId: '3', name: 'pull_3', vmSize: 'Standard_D4s_v5', location: 'westeurope', zone: '2', priority: 'Spot', provisioningState: 'Succeeded' },
    });
    expect(worker!.vm!.vmId).toMatch(/^[0-9a-f-]{36}$/);
    // Every transition was logged.
    expect(w.logs.filter((l) => typeof l.msg === 'string' && (l.msg as string).startsWith('provisioningState')).map((l) => l.to)).toEqual(['Creating', 'Succeeded']);
    // Tokens came from the managed identity endpoint, and ARM saw them.
    expect(azure.requests.some((r) => r.server === 'imds' && r.path.startsWith('/metadata/identity/oauth2/token'))).toBe(true);
  });

  it('never registers a VM that Azure is deleting, and exits non-zero', async () => {
    azure = await FakeAzure.start(UNIFORM_VM);
    azure.provisioningStates = ['Creating', 'Deleting'];
    const w = startWorker(m, { name: 'extra', env: azureEnv() });
    const { code } = await w.exited;
    expect(code).toBe(4);
    expect(w.stderr()).toContain('Deleting');
    expect(await m.api.workers()).toEqual([]);
  });

  it('names the missing Reader role and the az commands on 403', async () => {
    azure = await FakeAzure.start(UNIFORM_VM);
    azure.armScript.push(AUTHORIZATION_FAILED);
    const w = startWorker(m, { name: 'x', env: azureEnv() });
    expect((await w.exited).code).toBe(6);
    const err = w.stderr();
    expect(err).toContain('Reader role');
    expect(err).toContain('az vmss identity assign --resource-group rg-pullman --name pull');
    expect(err).toContain(`az role assignment create --assignee-object-id "$principal" --assignee-principal-type ServicePrincipal --role Reader --scope /subscriptions/${UNIFORM_VM.subscriptionId}/resourceGroups/rg-pullman`);
    expect(await m.api.workers()).toEqual([]);
  });

  it('waits as long as Retry-After says when ARM throttles', async () => {
    azure = await FakeAzure.start(UNIFORM_VM);
    azure.armScript.push({ status: 429, headers: { 'retry-after': '2' }, body: { error: { code: 'TooManyRequests', message: 'throttled' } } });
    azure.provisioningStates = ['Succeeded'];
    const w = startWorker(m, { name: 'x', env: azureEnv() });
    await w.waitForLog((l) => l.msg === 'registered with the manager', 'registration');
    const [throttled, next] = azure.armRequests();
    expect(next!.at - throttled!.at).toBeGreaterThanOrEqual(2_000);
  });

  it('uses virtualMachines.get for a Flexible scale set member', async () => {
    azure = await FakeAzure.start(FLEXIBLE_VM);
    azure.provisioningStates = ['Updating', 'Succeeded'];
    const w = startWorker(m, { name: 'x', env: azureEnv({ PULLMAN_NAME: 'flex-explicit' }) });
    await w.waitForLog((l) => l.msg === 'registered with the manager', 'registration');
    expect(azure.armRequests().map((r) => r.path)).toEqual(Array(2).fill(`/subscriptions/${FLEXIBLE_VM.subscriptionId}/resourceGroups/rg-pullman/providers/Microsoft.Compute/virtualMachines/pullflex_a1b2c3d4`));
    const [worker] = await m.api.workers();
    // An explicit PULLMAN_NAME wins over the VM name.
    expect(worker).toMatchObject({ name: 'flex-explicit', vm: { scaleSet: 'pullflex', instanceId: null, name: 'pullflex_a1b2c3d4', zone: null, provisioningState: 'Succeeded' } });
  });

  it('sends the client id of a user-assigned identity with the token request', async () => {
    azure = await FakeAzure.start(UNIFORM_VM);
    const clientId = '11111111-2222-3333-4444-555555555555';
    const r = await waitReady({ AZURE_CLIENT_ID: clientId });
    expect(r.code).toBe(0);
    const tokenRequests = azure.requests.filter((q) => q.path.startsWith('/metadata/identity/oauth2/token'));
    expect(tokenRequests.length).toBeGreaterThan(0);
    for (const q of tokenRequests) expect(q.query.client_id).toBe(clientId);
  });
});

describe('wait-ready exit codes', () => {
  it('0 ready, 3 timeout, 4 deleting, 5 failed, 6 forbidden', async () => {
    azure = await FakeAzure.start(UNIFORM_VM);
    const cases: Array<[string, () => void, Record<string, string>, number, string]> = [
      ['succeeded', () => (azure.provisioningStates = ['Creating', 'Succeeded']), {}, 0, ''],
      ['timeout', () => (azure.provisioningStates = ['Creating']), { PULLMAN_READY_TIMEOUT: '1s' }, 3, 'not Succeeded within 1000ms'],
      ['deleting', () => (azure.provisioningStates = ['Deleting']), {}, 4, 'Deleting'],
      ['failed', () => (azure.provisioningStates = ['Failed']), {}, 5, 'Failed'],
      ['forbidden', () => azure.armScript.push(AUTHORIZATION_FAILED), {}, 6, 'Reader role'],
    ];
    for (const [what, arrange, env, code, message] of cases) {
      azure.provisioningStates = ['Succeeded'];
      arrange();
      const r = await waitReady(env);
      expect({ what, code: r.code }).toEqual({ what, code });
      expect(r.stderr).toContain(message);
      azure = await restart(azure);
    }
  });
});

/** A fresh fake for the next case (its GET counter and scripts start over). */
async function restart(old: FakeAzure): Promise<FakeAzure> {
  await old.stop();
  return FakeAzure.start(old.vm);
}

describe('Scheduled Events', () => {
  it('a Preempt for this VM releases the running task, approves the event and exits 0; another worker finishes the task', async () => {
    const m = await startManager();
    azure = await FakeAzure.start(UNIFORM_VM);
    const spot = startWorker(m, { name: 'spot', slots: 1, env: azureEnv() });
    await spot.waitForLog((l) => l.msg === 'watching scheduled events', 'the watcher');
    // The first attempt would run for minutes; a later one is quick.
    const job = await m.api.createJob({ tasks: [{ key: 'long', shell: 'if [ "$PULLMAN_ATTEMPT" = 1 ]; then exec sleep 300; fi; echo done' }] });
    await spot.waitForLog((l) => l.msg === 'task started', 'task start');
    const event = scheduledEvent('Preempt', [UNIFORM_VM.name, 'pull_4'], 3_000);
    azure.publishEvents([event]);

    expect(await spot.exited).toEqual({ code: 0, signal: null });
    expect(azure.approvals).toEqual([event.EventId]);
    expect(spot.logs.some((l) => l.msg === 'state draining' && String(l.reason).includes('Preempt'))).toBe(true);
    // The manager was told before the approval: the release was acked, then bye.
    const spotRecord = (await m.api.workers()).find((w) => w.name === 'spot')!;
    expect(spotRecord.state).toBe('gone');

    startWorker(m, { name: 'regular', slots: 1 });
    expect((await finished(m.api, job.id)).state).toBe('succeeded');
    const [task] = await m.api.tasks(job.id);
    const full = await m.api.task(task!.id);
    expect(full.history!.map((h) => h.outcome)).toEqual(['released', 'succeeded']);
    expect(full.result!.stdoutTail).toBe('done\n');
  });

  it('ignores events for other VMs and Freeze events', async () => {
    const m = await startManager();
    azure = await FakeAzure.start(UNIFORM_VM);
    const w = startWorker(m, { name: 'w', slots: 1, env: azureEnv() });
    await w.waitForLog((l) => l.msg === 'watching scheduled events', 'the watcher');
    const polled = () => azure.requests.filter((r) => r.path === '/metadata/scheduledevents' && r.method === 'GET').length;
    azure.publishEvents([scheduledEvent('Terminate', ['pull_4', 'pull_5'], 60_000), scheduledEvent('Freeze', [UNIFORM_VM.name], 60_000)]);
    const seen = polled();
    // Two more polls after publishing: the document was read and judged.
    await until('two polls', () => (polled() >= seen + 2 ? true : undefined), 30_000);
    const job = await m.api.createJob({ tasks: [{ command: ['true'] }] });
    expect((await finished(m.api, job.id)).state).toBe('succeeded');
    expect(w.proc.exitCode).toBeNull();
    expect(azure.approvals).toEqual([]);
    expect(w.logs.some((l) => l.msg === 'state draining')).toBe(false);
  });
});
