/**
 * A faithful fake of the two Azure endpoints a worker talks to, for tests only:
 *  - IMDS over http: instance metadata, managed-identity tokens (path with and without the
 *    trailing slash), Scheduled Events (GET documents, POST approvals);
 *  - ARM over https with a self-signed certificate made at start: the Compute GETs for a
 *    Uniform scale set instance and for a VM (Flexible member or standalone).
 * Bodies are Azure's published responses (test/fixtures/azure); each test scripts the parts
 * that vary: provisioning-state sequences, errors, throttling, event documents, resource ids.
 * The production SDKs talk to it unchanged, switched by PULLMAN_IMDS_URL, PULLMAN_ARM_URL and
 * NODE_EXTRA_CA_CERTS (or tlsOptions.ca).
 */
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const FIXTURES = fileURLToPath(new URL('../fixtures/azure/', import.meta.url));
const fixture = <T>(name: string): T => JSON.parse(readFileSync(join(FIXTURES, name), 'utf8')) as T;

export interface RecordedRequest {
  at: number;
  server: 'imds' | 'arm';
  method: string;
  path: string;
  query: Record<string, string>;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** A scripted answer that overrides the normal one, consumed in order. */
export interface ScriptedResponse {
  status: number;
  headers?: Record<string, string>;
  body?: unknown;
}

export interface VmIdentity {
  subscriptionId: string;
  resourceGroup: string;
  /** compute.name: what Scheduled Events list in Resources. */
  name: string;
  /** Uniform: the scale set and instance id; Flexible/plain: omit. */
  uniform?: { scaleSet: string; instanceId: string };
  /** Flexible member: the scale set name IMDS reports in vmScaleSetName. */
  flexibleScaleSet?: string;
  vmSize?: string;
  zone?: string;
  priority?: 'Regular' | 'Spot';
  location?: string;
}

export const UNIFORM_VM: VmIdentity = {
  subscriptionId: '00000000-1111-2222-3333-444444444444',
  resourceGroup: 'rg-pullman',
  name: 'pull_3',
  uniform: { scaleSet: 'pull', instanceId: '3' },
  vmSize: 'Standard_D4s_v5',
  zone: '2',
  priority: 'Spot',
  location: 'westeurope',
};

export const FLEXIBLE_VM: VmIdentity = {
  subscriptionId: '00000000-1111-2222-3333-444444444444',
  resourceGroup: 'rg-pullman',
  name: 'pullflex_a1b2c3d4',
  flexibleScaleSet: 'pullflex',
  vmSize: 'Standard_F8s_v2',
  zone: '',
  priority: 'Regular',
  location: 'westeurope',
};

export function resourceIdOf(vm: VmIdentity): string {
  const base = `/subscriptions/${vm.subscriptionId}/resourceGroups/${vm.resourceGroup}/providers/Microsoft.Compute`;
  return vm.uniform ? `${base}/virtualMachineScaleSets/${vm.uniform.scaleSet}/virtualMachines/${vm.uniform.instanceId}` : `${base}/virtualMachines/${vm.name}`;
}

export class FakeAzure {
  readonly requests: RecordedRequest[] = [];
  /** Event ids approved through POST /metadata/scheduledevents, in order. */
  readonly approvals: string[] = [];
  vm: VmIdentity = UNIFORM_VM;
  /** provisioningState answered by successive ARM GETs; the last one repeats. */
  provisioningStates: string[] = ['Succeeded'];
  /** Overrides consumed before normal answers, per endpoint. */
  readonly armScript: ScriptedResponse[] = [];
  readonly imdsInstanceScript: ScriptedResponse[] = [];
  readonly tokenScript: ScriptedResponse[] = [];
  readonly eventsScript: ScriptedResponse[] = [];
  /** The current Scheduled Events document. */
  scheduledEvents: { DocumentIncarnation: number; Events: Array<Record<string, unknown>> } = fixture('scheduledevents-1-empty.json');

  private imds!: Server;
  private arm!: Server;
  private dir = mkdtempSync(join(tmpdir(), 'fake-azure-'));
  private armGets = 0;
  imdsUrl = '';
  armUrl = '';
  /** PEM file of the ARM server's self-signed certificate: NODE_EXTRA_CA_CERTS for the worker. */
  caFile = '';

  static async start(vm: VmIdentity = UNIFORM_VM): Promise<FakeAzure> {
    const f = new FakeAzure();
    f.vm = vm;
    await f.listen();
    return f;
  }

  /** Environment that points a worker process at this fake. */
  env(): Record<string, string> {
    return { PULLMAN_IMDS_URL: this.imdsUrl, PULLMAN_ARM_URL: this.armUrl, NODE_EXTRA_CA_CERTS: this.caFile };
  }

  /** Publishes a new Scheduled Events document (the incarnation goes up, as on Azure). */
  publishEvents(events: Array<Record<string, unknown>>): void {
    this.scheduledEvents = { DocumentIncarnation: this.scheduledEvents.DocumentIncarnation + 1, Events: events };
  }

  armRequests(): RecordedRequest[] {
    return this.requests.filter((r) => r.server === 'arm');
  }

  async stop(): Promise<void> {
    this.imds.closeAllConnections();
    this.arm.closeAllConnections();
    await Promise.all([new Promise((r) => this.imds.close(r)), new Promise((r) => this.arm.close(r))]);
  }

  private async listen(): Promise<void> {
    const key = join(this.dir, 'key.pem');
    this.caFile = join(this.dir, 'cert.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-days', '2', '-keyout', key, '-out', this.caFile], { stdio: 'ignore' });
    this.imds = createHttpServer((req, res) => void this.handle('imds', req, res));
    this.arm = createHttpsServer({ key: readFileSync(key), cert: readFileSync(this.caFile) }, (req, res) => void this.handle('arm', req, res));
    this.imds.listen(0, '127.0.0.1');
    this.arm.listen(0, '127.0.0.1');
    await Promise.all([once(this.imds, 'listening'), once(this.arm, 'listening')]);
    this.imdsUrl = `http://127.0.0.1:${(this.imds.address() as AddressInfo).port}`;
    this.armUrl = `https://127.0.0.1:${(this.arm.address() as AddressInfo).port}`;
  }

  private async handle(server: 'imds' | 'arm', req: IncomingMessage, res: ServerResponse): Promise<void> {
    let body = '';
    for await (const chunk of req) body += chunk;
    const url = new URL(req.url ?? '/', 'http://fake');
    const rec: RecordedRequest = { at: Date.now(), server, method: req.method ?? 'GET', path: url.pathname, query: Object.fromEntries(url.searchParams), headers: req.headers, body };
    this.requests.push(rec);
    const send = (status: number, payload: unknown, headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers });
      res.end(payload === undefined ? '' : JSON.stringify(payload));
    };
    const scripted = (queue: ScriptedResponse[]): boolean => {
      const next = queue.shift();
      if (!next) return false;
      send(next.status, next.body ?? { error: { code: `Status${next.status}`, message: `scripted ${next.status}` } }, next.headers);
      return true;
    };
    if (server === 'imds') return this.imdsRoute(rec, send, scripted);
    return this.armRoute(rec, send, scripted);
  }

  private imdsRoute(rec: RecordedRequest, send: (s: number, p: unknown, h?: Record<string, string>) => void, scripted: (q: ScriptedResponse[]) => boolean): void {
    // IMDS rejects requests without the header, as documented.
    if (rec.headers.metadata !== 'true') return send(400, { error: 'Bad request. Required metadata header not specified' });
    // Managed identity: msal-node asks with a trailing slash, older clients without.
    if (rec.path === '/metadata/identity/oauth2/token/' || rec.path === '/metadata/identity/oauth2/token') {
      if (scripted(this.tokenScript)) return;
      const token = fixture<Record<string, string>>('identity-token.json');
      const now = Math.floor(Date.now() / 1000);
      return send(200, { ...token, access_token: `fake-token-${now}`, expires_in: '3599', expires_on: String(now + 3599), not_before: String(now - 60), resource: rec.query.resource ?? token.resource, ...(rec.query.client_id ? { client_id: rec.query.client_id } : {}) });
    }
    if (!rec.query['api-version']) return send(400, fixture('error-missing-api-version.json'));
    if (rec.path === '/metadata/instance') {
      if (scripted(this.imdsInstanceScript)) return;
      const doc = fixture<{ compute: Record<string, unknown> }>('instance.json');
      const vm = this.vm;
      doc.compute = {
        ...doc.compute,
        name: vm.name,
        resourceId: resourceIdOf(vm),
        subscriptionId: vm.subscriptionId,
        resourceGroupName: vm.resourceGroup,
        vmScaleSetName: vm.uniform?.scaleSet ?? vm.flexibleScaleSet ?? '',
        vmSize: vm.vmSize ?? doc.compute.vmSize,
        zone: vm.zone ?? '',
        priority: vm.priority ?? 'Regular',
        location: vm.location ?? doc.compute.location,
      };
      return send(200, doc);
    }
    if (rec.path === '/metadata/scheduledevents') {
      if (rec.method === 'POST') {
        const ack = JSON.parse(rec.body || '{}') as { StartRequests?: Array<{ EventId: string }> };
        for (const r of ack.StartRequests ?? []) this.approvals.push(r.EventId);
        return send(200, undefined);
      }
      if (scripted(this.eventsScript)) return;
      return send(200, this.scheduledEvents);
    }
    send(404, { error: 'Not found' });
  }

  private armRoute(rec: RecordedRequest, send: (s: number, p: unknown, h?: Record<string, string>) => void, scripted: (q: ScriptedResponse[]) => boolean): void {
    if (!String(rec.headers.authorization ?? '').startsWith('Bearer fake-token-')) {
      return send(401, { error: { code: 'AuthenticationFailed', message: 'Authentication failed. The Authorization header is missing or invalid.' } });
    }
    if (scripted(this.armScript)) return;
    const vm = this.vm;
    const base = `/subscriptions/${vm.subscriptionId}/resourceGroups/${vm.resourceGroup}/providers/Microsoft.Compute`.toLowerCase();
    const path = rec.path.toLowerCase();
    const state = this.provisioningStates[Math.min(this.armGets, this.provisioningStates.length - 1)]!;
    if (vm.uniform && path === `${base}/virtualmachinescalesets/${vm.uniform.scaleSet}/virtualmachines/${vm.uniform.instanceId}`.toLowerCase()) {
      this.armGets++;
      const doc = fixture<Record<string, any>>('vmss-vm-get.json');
      doc.id = resourceIdOf(vm);
      doc.name = `${vm.uniform.scaleSet}_${vm.uniform.instanceId}`;
      doc.instanceId = vm.uniform.instanceId;
      doc.properties.provisioningState = state;
      return send(200, doc);
    }
    if (!vm.uniform && path === `${base}/virtualmachines/${vm.name}`.toLowerCase()) {
      this.armGets++;
      const doc = fixture<Record<string, any>>('vm-get.json');
      doc.id = resourceIdOf(vm);
      doc.name = vm.name;
      doc.properties.provisioningState = state;
      return send(200, doc);
    }
    send(404, { error: { code: 'ResourceNotFound', message: `The Resource '${rec.path}' was not found.` } });
  }
}

/** The 403 Azure answers when the identity lacks a role assignment (published body). */
export const AUTHORIZATION_FAILED: ScriptedResponse = { status: 403, body: fixture('error-authorization-failed.json') };

/** A Scheduled Event built from the documented template. */
export function scheduledEvent(type: 'Terminate' | 'Preempt' | 'Reboot' | 'Redeploy' | 'Freeze', resources: string[], notBeforeMs = 30_000, id = `${type.toUpperCase()}-${Math.random().toString(16).slice(2, 10)}`): Record<string, unknown> {
  return {
    EventId: id,
    EventType: type,
    ResourceType: 'VirtualMachine',
    Resources: resources,
    EventStatus: 'Scheduled',
    NotBefore: new Date(Date.now() + notBeforeMs).toUTCString(),
    Description: `${type} scheduled by the test`,
    EventSource: 'Platform',
    DurationInSeconds: -1,
  };
}
