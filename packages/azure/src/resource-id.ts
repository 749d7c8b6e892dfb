/**
 * Parses the ARM resource id IMDS reports as `compute.resourceId` into what the Compute API
 * needs. Two shapes exist:
 *   Uniform scale set instance:
 *     /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmss}/virtualMachines/{instanceId}
 *   Flexible scale set member or plain VM:
 *     /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}
 * ARM treats names case-insensitively, and real ids vary in case, so matching does too.
 */
export type VmResource =
  | { kind: 'uniform'; subscriptionId: string; resourceGroup: string; scaleSet: string; instanceId: string }
  | { kind: 'vm'; subscriptionId: string; resourceGroup: string; name: string };

export class ResourceIdError extends Error {
  override readonly name = 'ResourceIdError';
}

const UNIFORM = /^\/subscriptions\/([^/]+)\/resourceGroups\/([^/]+)\/providers\/Microsoft\.Compute\/virtualMachineScaleSets\/([^/]+)\/virtualMachines\/([^/]+)\/?$/i;
const VM = /^\/subscriptions\/([^/]+)\/resourceGroups\/([^/]+)\/providers\/Microsoft\.Compute\/virtualMachines\/([^/]+)\/?$/i;

export function parseVmResourceId(resourceId: string): VmResource {
  const id = resourceId.trim();
  let m = UNIFORM.exec(id);
  if (m) return { kind: 'uniform', subscriptionId: m[1]!, resourceGroup: m[2]!, scaleSet: m[3]!, instanceId: m[4]! };
  m = VM.exec(id);
  if (m) return { kind: 'vm', subscriptionId: m[1]!, resourceGroup: m[2]!, name: m[3]! };
  throw new ResourceIdError(`not a virtual machine resource id: ${JSON.stringify(resourceId)}`);
}
