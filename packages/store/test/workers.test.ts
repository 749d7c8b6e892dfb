import { describe, expect, it } from 'vitest';
import type { VmFacts } from '@pullman/protocol';
import { failed, hello, lease, openStore, report, session, T0 } from './helpers.js';

const vm: VmFacts = {
  vmId: 'vm-id', resourceId: '/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss/virtualMachines/3',
  scaleSet: 'ss', instanceId: '3', name: 'ss_3', vmSize: 'Standard_D4s_v5', location: 'westeurope', zone: '2', priority: 'Spot', provisioningState: 'Succeeded',
};

describe('workers', () => {
  it('registers a new worker and reads it back', () => {
    const { store } = openStore();
    const id = store.registerWorker(hello({ name: 'ss_3', hostname: 'host3', slots: 8, labels: ['gpu', 'zone=2'], version: '1.2.3', vm }), 'sess-1');
    expect(id).toMatch(/^w-[0-9a-f]{12}$/);
    expect(store.getWorker(id)).toEqual({
      id, name: 'ss_3', hostname: 'host3', state: 'ready', slots: 8, usedSlots: 0, labels: ['gpu', 'zone=2'], vm, version: '1.2.3', problem: null,
      connectedAt: new Date(T0).toISOString(), lastHeartbeatAt: new Date(T0).toISOString(), tasksSucceeded: 0, tasksFailed: 0,
    });
    expect(store.getWorker('w-unknown')).toBeNull();
  });

  it('reuses the record when the hello names a known worker, and creates a new one for an unknown id', () => {
    const { store, clock } = openStore();
    const id = store.registerWorker(hello({ slots: 2 }), 'sess-1');
    store.setWorkerState(id, 'offline');
    clock.advance(5000);
    expect(store.registerWorker(hello({ workerId: id, slots: 6, labels: ['x'] }), 'sess-2')).toBe(id);
    expect(store.getWorker(id)).toMatchObject({ state: 'ready', slots: 6, labels: ['x'], connectedAt: new Date(T0 + 5000).toISOString() });
    const other = store.registerWorker(hello({ workerId: 'w-forgotten' }), 'sess-3');
    expect(other).not.toBe(id);
    expect(other).not.toBe('w-forgotten');
    expect(store.listWorkers().map((w) => w.id)).toEqual([id, other]);
  });

  it('shows a worker with a problem as unhealthy, busy or not, until it is fixed or a new session starts', () => {
    const { store } = openStore();
    const w = store.registerWorker(hello({ slots: 2 }), 's');
    store.createJob({ tasks: [{ shell: 'a' }] });
    store.claimTasks(session(w, 's'), [], 1);
    store.setWorkerProblem(w, 'disk full');
    expect(store.getWorker(w)).toMatchObject({ state: 'unhealthy', problem: 'disk full', usedSlots: 1 });
    expect(store.listWorkers()[0]).toMatchObject({ state: 'unhealthy', problem: 'disk full' });
    store.setWorkerProblem(w, null);
    expect(store.getWorker(w)).toMatchObject({ state: 'busy', problem: null });
    store.setWorkerProblem(w, 'disk full');
    // Draining or offline says more than the problem (which only a connected worker can have).
    store.setWorkerState(w, 'draining');
    expect(store.getWorker(w)).toMatchObject({ state: 'draining', problem: null });
    store.setWorkerState(w, 'offline');
    expect(store.getWorker(w)).toMatchObject({ state: 'offline', problem: null });
    // A new session starts healthy; the worker says so again if it still holds.
    store.registerWorker(hello({ workerId: w, slots: 2 }), 's2');
    expect(store.getWorker(w)).toMatchObject({ state: 'busy', problem: null });
  });

  it('gives a new id to a hello that names a known worker from another host or VM (a baked image)', () => {
    const { store } = openStore();
    const id = store.registerWorker(hello({ hostname: 'vmss000001', vm }), 's1');
    // The same VM reconnecting keeps its id.
    expect(store.registerWorker(hello({ workerId: id, hostname: 'vmss000001', vm }), 's2')).toBe(id);
    // Another VM made from an image that carries the first one's worker-id file.
    const otherHost = store.registerWorker(hello({ workerId: id, hostname: 'vmss000002', vm: { ...vm, vmId: 'vm-id-2' } }), 's3');
    expect(otherHost).not.toBe(id);
    // Same hostname (a reused name), another VM.
    const otherVm = store.registerWorker(hello({ workerId: id, hostname: 'vmss000001', vm: { ...vm, vmId: 'vm-id-3' } }), 's4');
    expect(otherVm).not.toBe(id);
    expect(new Set([id, otherHost, otherVm]).size).toBe(3);
    expect(store.getWorker(id)).toMatchObject({ hostname: 'vmss000001', vm });
    // A start without VM facts (IMDS unreachable) keeps the id and the stored facts, so another
    // VM is still told apart afterwards.
    expect(store.registerWorker(hello({ workerId: id, hostname: 'vmss000001', vm: null }), 's5')).toBe(id);
    expect(store.getWorker(id)).toMatchObject({ vm });
    expect(store.registerWorker(hello({ workerId: id, hostname: 'vmss000001', vm: { ...vm, vmId: 'vm-id-4' } }), 's6')).not.toBe(id);
    // Off Azure (no VM facts on either side), the hostname decides.
    const plain = store.registerWorker(hello({ hostname: 'lab-1', vm: null }), 's7');
    expect(store.registerWorker(hello({ workerId: plain, hostname: 'lab-1', vm: null }), 's8')).toBe(plain);
    expect(store.registerWorker(hello({ workerId: plain, hostname: 'lab-2', vm: null }), 's9')).not.toBe(plain);
  });

  it('lists workers in registration order', () => {
    const { store, clock } = openStore();
    const ids = [];
    for (let i = 0; i < 4; i++) {
      ids.push(store.registerWorker(hello({ name: `vm-${i}` }), `s-${i}`));
      clock.advance(1);
    }
    expect(store.listWorkers().map((w) => [w.id, w.name])).toEqual(ids.map((id, i) => [id, `vm-${i}`]));
  });

  it('derives usedSlots and busy from running tasks', () => {
    const { store, clock } = openStore();
    const w = store.registerWorker(hello({ slots: 4 }), 's');
    clock.advance(1); // listWorkers orders by registration time, then by (random) id
    const idle = store.registerWorker(hello({ name: 'idle' }), 's2');
    store.createJob({ tasks: [{ shell: 'a', slots: 2 }, { shell: 'b' }, { shell: 'c' }] });
    const claimed = store.claimTasks(session(w, 's'), [], 3);
    expect(claimed.map((t) => t.spec.shell)).toEqual(['a', 'b']); // 2 + 1 slots fill the worker
    expect(store.getWorker(w)).toMatchObject({ state: 'busy', usedSlots: 3 });
    expect(store.listWorkers().map((x) => [x.id, x.state, x.usedSlots])).toEqual([[w, 'busy', 3], [idle, 'ready', 0]]);
    store.completeTask(w, lease(claimed[0]!), report());
    expect(store.getWorker(w)).toMatchObject({ state: 'busy', usedSlots: 1 });
    store.failTask(w, lease(claimed[1]!), failed());
    expect(store.getWorker(w)).toMatchObject({ state: 'ready', usedSlots: 0, tasksSucceeded: 1, tasksFailed: 1 });
  });

  it('keeps draining and offline states even while tasks run', () => {
    const { store } = openStore();
    const w = store.registerWorker(hello(), 's');
    store.createJob({ tasks: [{ shell: 'a' }] });
    store.claimTasks(session(w, 's'), [], 1);
    store.setWorkerState(w, 'draining');
    expect(store.getWorker(w)).toMatchObject({ state: 'draining', usedSlots: 1 });
    store.setWorkerState(w, 'offline');
    expect(store.getWorker(w)).toMatchObject({ state: 'offline', usedSlots: 1 });
  });

  it('counts succeeded and failed executions per worker', () => {
    const { store } = openStore();
    const w1 = store.registerWorker(hello({ name: 'one' }), 's1');
    const w2 = store.registerWorker(hello({ name: 'two' }), 's2');
    store.createJob({ tasks: [{ shell: 'a' }, { shell: 'b' }, { shell: 'c', retries: 1 }, { shell: 'd' }] });
    const [a, b] = store.claimTasks(session(w1, 's1'), [], 2);
    const [c, d] = store.claimTasks(session(w2, 's2'), [], 2);
    store.completeTask(w1, lease(a!), report());
    store.completeTask(w1, lease(b!), report());
    store.failTask(w2, lease(c!), failed()); // requeued: still a failed execution
    store.completeTask(w2, lease(d!), report());
    const [c2] = store.claimTasks(session(w2, 's2'), [], 1);
    store.failTask(w2, lease(c2!), failed());
    expect(store.getWorker(w1)).toMatchObject({ tasksSucceeded: 2, tasksFailed: 0 });
    expect(store.getWorker(w2)).toMatchObject({ tasksSucceeded: 1, tasksFailed: 2 });
  });

  it('markAllWorkersOffline marks connected workers offline, since now', () => {
    const { store, clock } = openStore();
    const ready = store.registerWorker(hello({ name: 'r' }), 's1');
    const draining = store.registerWorker(hello({ name: 'd' }), 's2');
    const gone = store.registerWorker(hello({ name: 'g' }), 's3');
    const offline = store.registerWorker(hello({ name: 'o' }), 's4');
    store.setWorkerState(draining, 'draining');
    store.setWorkerState(gone, 'gone');
    store.setWorkerState(offline, 'offline');
    clock.advance(60_000);
    expect(store.markAllWorkersOffline()).toBe(2);
    expect(Object.fromEntries(store.listWorkers().map((w) => [w.name, w.state]))).toEqual({ r: 'offline', d: 'offline', g: 'gone', o: 'offline' });
    expect(store.db.prepare('SELECT session_id FROM workers WHERE id = ?').get(ready)).toEqual({ session_id: null });
    expect(store.workersOfflineSince(T0)).toEqual([offline]);
    expect(store.workersOfflineSince(T0 + 60_000).sort()).toEqual([draining, offline, ready].sort());
  });
});

