/**
 * Wait until Azure reports this VM `provisioningState = Succeeded`.
 *
 * Why: ssh, systemd and cloud-init all run while the VM is still `Creating`. A worker that
 * joins that early confuses autoscaling and health checks, and with overprovisioning it can
 * take work on a VM that Azure is about to delete. So: read IMDS for who we are, get a token
 * from the VM's managed identity, and poll ARM until Succeeded (or Deleting/Failed: leave).
 *
 * The production SDKs run unchanged against fakes: PULLMAN_IMDS_URL also redirects identity
 * tokens (through AZURE_POD_IDENTITY_AUTHORITY_HOST) and PULLMAN_ARM_URL redirects ARM.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { ManagedIdentityCredential, type TokenCredential } from '@azure/identity';
import { ComputeManagementClient } from '@azure/arm-compute';
import type { VmFacts } from '@pullman/protocol';
import { IMDS_DEFAULT_URL, type ComputeFacts, type ImdsClient } from './imds.js';
import { silentLog, type Log } from './log.js';
import { parseVmResourceId, type VmResource } from './resource-id.js';

export const ARM_DEFAULT_URL = 'https://management.azure.com';

/** Why waiting for Succeeded gave up. Each is a distinct exit code of `wait-ready`. */
export type ReadyFailure = 'timeout' | 'vm-deleting' | 'vm-failed' | 'forbidden' | 'aborted';

export class AzureReadyError extends Error {
  override readonly name = 'AzureReadyError';
  constructor(
    readonly reason: ReadyFailure,
    message: string,
  ) {
    super(message);
  }
}

export interface WaitForSucceededOptions {
  imds: ImdsClient;
  armUrl?: string;
  /** Client id of a user-assigned identity (AZURE_CLIENT_ID); omit for the system-assigned one. */
  clientId?: string | undefined;
  intervalMs: number;
  timeoutMs: number;
  log?: Log;
  signal?: AbortSignal;
}

export interface ReadyVm {
  facts: ComputeFacts;
  vm: VmFacts;
}

/**
 * Points managed-identity token requests at `imdsUrl` when it is not the real IMDS. Must run
 * before the first getToken() in the process: msal-node caches where it sends them.
 */
export function redirectIdentityEndpoint(imdsUrl: string): void {
  const url = imdsUrl.replace(/\/+$/, '');
  if (url !== IMDS_DEFAULT_URL && !process.env.AZURE_POD_IDENTITY_AUTHORITY_HOST) process.env.AZURE_POD_IDENTITY_AUTHORITY_HOST = url;
}

/** Polls ARM until this VM is Succeeded. Resolves with its facts; rejects with AzureReadyError. */
export async function waitForSucceeded(o: WaitForSucceededOptions): Promise<ReadyVm> {
  const log = o.log ?? silentLog;
  const deadline = Date.now() + o.timeoutMs;
  const facts = await o.imds.instance(o.signal);
  const resource = parseVmResourceId(facts.resourceId);
  log.info({ resourceId: facts.resourceId, kind: resource.kind, name: facts.name, vmSize: facts.vmSize }, 'read instance metadata');

  redirectIdentityEndpoint(o.imds.baseUrl);
  const credential: TokenCredential = o.clientId ? new ManagedIdentityCredential({ clientId: o.clientId }) : new ManagedIdentityCredential();
  const client = new ComputeManagementClient(credential, resource.subscriptionId, { endpoint: o.armUrl ?? ARM_DEFAULT_URL });
  const read = (): Promise<string | undefined> =>
    resource.kind === 'uniform'
      ? client.virtualMachineScaleSetVMs.get(resource.resourceGroup, resource.scaleSet, resource.instanceId).then((vm) => vm.provisioningState)
      : client.virtualMachines.get(resource.resourceGroup, resource.name).then((vm) => vm.provisioningState);

  let last: string | undefined;
  for (;;) {
    if (o.signal?.aborted) throw new AzureReadyError('aborted', 'stopped while waiting for Azure to report the VM Succeeded');
    let waitMs = o.intervalMs;
    try {
      const state = (await read()) ?? 'Unknown';
      if (state !== last) {
        log.info({ from: last ?? null, to: state }, `provisioningState ${state}`);
        last = state;
      }
      if (state === 'Succeeded') return { facts, vm: vmFacts(facts, resource, state) };
      if (state === 'Deleting') throw new AzureReadyError('vm-deleting', `Azure is deleting this VM (provisioningState Deleting): an overprovisioned extra or a scale-in; not registering`);
      if (state === 'Failed') throw new AzureReadyError('vm-failed', `Azure reports this VM's provisioning Failed; not registering (see the scale set's activity log)`);
    } catch (err) {
      if (err instanceof AzureReadyError) throw err;
      const status = (err as { statusCode?: number }).statusCode;
      if (status === 403 || status === 401) throw new AzureReadyError('forbidden', forbiddenMessage(resource, facts, o.clientId, err as Error));
      if (status === 429) {
        // The SDK already retried with Retry-After; if it is still throttled, keep obeying it.
        waitMs = Math.max(waitMs, retryAfterMs(err) ?? waitMs);
        log.warn({ waitMs }, 'ARM throttled the request (429); waiting as Retry-After says');
      } else {
        log.warn({ err: (err as Error).message, status: status ?? null }, 'could not read the provisioning state; will retry');
      }
    }
    const left = deadline - Date.now();
    if (left <= 0) throw new AzureReadyError('timeout', `the VM was not Succeeded within ${o.timeoutMs}ms (last provisioningState: ${last ?? 'unknown'})`);
    try {
      await sleep(Math.min(waitMs, left), undefined, o.signal ? { signal: o.signal } : undefined);
    } catch {
      throw new AzureReadyError('aborted', 'stopped while waiting for Azure to report the VM Succeeded');
    }
  }
}

function vmFacts(f: ComputeFacts, r: VmResource, provisioningState: string): VmFacts {
  return {
    vmId: f.vmId,
    resourceId: f.resourceId,
    scaleSet: r.kind === 'uniform' ? r.scaleSet : f.vmScaleSetName || null,
    instanceId: r.kind === 'uniform' ? r.instanceId : null,
    name: f.name,
    vmSize: f.vmSize,
    location: f.location,
    zone: f.zone || null,
    priority: f.priority || null,
    provisioningState,
  };
}

function retryAfterMs(err: unknown): number | null {
  const header = (err as { response?: { headers?: { get(name: string): string | undefined } } }).response?.headers?.get('retry-after');
  if (!header) return null;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return seconds * 1_000;
  const at = Date.parse(header);
  return Number.isNaN(at) ? null : Math.max(0, at - Date.now());
}

/** Names the missing role assignment and the az commands that grant it. */
function forbiddenMessage(r: VmResource, f: ComputeFacts, clientId: string | undefined, err: Error): string {
  const rgScope = `/subscriptions/${r.subscriptionId}/resourceGroups/${r.resourceGroup}`;
  const identity = clientId
    ? `the user-assigned identity with client id ${clientId} (AZURE_CLIENT_ID)`
    : "this VM's system-assigned managed identity";
  const assign = r.kind === 'uniform'
    ? `  az vmss identity assign --resource-group ${r.resourceGroup} --name ${r.scaleSet}\n  principal=$(az vmss show --resource-group ${r.resourceGroup} --name ${r.scaleSet} --query identity.principalId -o tsv)`
    : `  az vm identity assign --resource-group ${r.resourceGroup} --name ${f.name}\n  principal=$(az vm show --resource-group ${r.resourceGroup} --name ${f.name} --query identity.principalId -o tsv)`;
  const principal = clientId ? `  principal=$(az identity list --query "[?clientId=='${clientId}'].principalId" -o tsv)` : assign;
  return [
    `ARM refused to read this VM (${(err as { statusCode?: number }).statusCode ?? 403}: ${err.message.split('\n')[0]}).`,
    `The worker reads its own provisioningState with ${identity}, which needs the Reader role on the VM or its resource group. Grant it with:`,
    principal,
    `  az role assignment create --assignee-object-id "$principal" --assignee-principal-type ServicePrincipal --role Reader --scope ${rgScope}`,
    'Role assignments can take a few minutes to apply.',
  ].join('\n');
}
