import { describe, expect, it } from 'vitest';
import { ResourceIdError, parseVmResourceId } from '../src/resource-id.js';

describe('parseVmResourceId', () => {
  it('parses a Uniform scale set instance', () => {
    expect(parseVmResourceId('/subscriptions/sub-1/resourceGroups/rg-batch/providers/Microsoft.Compute/virtualMachineScaleSets/pull/virtualMachines/3')).toEqual({
      kind: 'uniform',
      subscriptionId: 'sub-1',
      resourceGroup: 'rg-batch',
      scaleSet: 'pull',
      instanceId: '3',
    });
  });

  it('parses a Flexible member or plain VM, as IMDS publishes it', () => {
    expect(parseVmResourceId('/subscriptions/xxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxx/resourceGroups/macikgo-test-may-23/providers/Microsoft.Compute/virtualMachines/examplevmname')).toEqual({
      kind: 'vm',
      subscriptionId: 'xxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxx',
      resourceGroup: 'macikgo-test-may-23',
      name: 'examplevmname',
    });
  });

  it('matches ARM case-insensitively and tolerates a trailing slash', () => {
    expect(parseVmResourceId('/SUBSCRIPTIONS/s/RESOURCEGROUPS/RG/PROVIDERS/microsoft.compute/VIRTUALMACHINESCALESETS/v/VIRTUALMACHINES/0/')).toMatchObject({ kind: 'uniform', scaleSet: 'v', instanceId: '0' });
  });

  it.each([
    '',
    'not an id',
    '/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/vmss',
    '/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/nic',
    '/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/a/extra',
    '/subscriptions//resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/a',
  ])('rejects %j', (id) => {
    expect(() => parseVmResourceId(id)).toThrow(ResourceIdError);
  });
});
