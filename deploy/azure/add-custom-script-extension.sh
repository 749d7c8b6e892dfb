#!/usr/bin/env bash
# Adds the Custom Script Extension in custom-script-extension.json to the worker scale set. Use it
# for images that have the Pullman unit and worker baked in but not enabled (with
# deploy/cloud-init/worker.yaml you do not need it: cloud-init already enables the unit).
#
# Why the command only enables the unit and returns (`--no-block`):
#   A VM becomes provisioningState=Succeeded only after ALL its extensions have finished. The
#   worker waits for Succeeded before it registers (ExecStartPre=pullman-worker wait-ready). If
#   the extension waited for the worker, the extension would wait for Succeeded, which waits for
#   the extension: a deadlock that ends when the extension times out and the VM is marked
#   Failed. So the extension starts the unit without waiting, finishes at once, the VM becomes
#   Succeeded, and the gate inside the unit opens.
#
# Why the gate is still needed although extensions run last:
#   With overprovisioning on, Azure creates extra VMs and deletes the surplus. Those VMs run
#   extensions too, so the extension alone would start workers on VMs about to be deleted. Their
#   workers see provisioningState=Deleting in the gate and exit without ever registering.
#   Extensions also run only at provisioning, not at reboot; the enabled unit starts the worker
#   at every boot.
set -euo pipefail

RESOURCE_GROUP="${RESOURCE_GROUP:-rg-pullman}"
VMSS_NAME="${VMSS_NAME:-pullman-workers}"
SETTINGS="${SETTINGS:-$(dirname "$0")/custom-script-extension.json}"

az vmss extension set \
  --resource-group "$RESOURCE_GROUP" \
  --vmss-name "$VMSS_NAME" \
  --name CustomScript \
  --publisher Microsoft.Azure.Extensions \
  --version 2.1 \
  --settings "$SETTINGS"

# With the Manual upgrade policy, existing VMs get the extension only when updated; new VMs
# (scale-out) get it at creation.
az vmss update-instances --resource-group "$RESOURCE_GROUP" --name "$VMSS_NAME" --instance-ids '*'
