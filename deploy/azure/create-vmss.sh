#!/usr/bin/env bash
# Creates the Pullman worker scale set with the Azure CLI: the same result as vmss.json.
# Run it where `az` is logged in (your workstation, or the jumpbox after `az login`).
# Change the names below (or set them in the environment); nothing else needs editing.
#
#   ./create-vmss.sh                       # create the scale set
#   SPOT=true INSTANCE_COUNT=20 ./create-vmss.sh
#
# What it does:
#   1. renders deploy/cloud-init/worker.yaml with the manager URL and the worker token;
#   2. az vmss create with that file as --custom-data, a system-assigned identity holding the
#      Reader role on the resource group (--assign-identity --role Reader --scope), terminate
#      notifications (5 minutes), and optionally Spot VMs and no overprovisioning.
set -euo pipefail

RESOURCE_GROUP="${RESOURCE_GROUP:-rg-pullman}"
VMSS_NAME="${VMSS_NAME:-pullman-workers}"
VNET_NAME="${VNET_NAME:-vnet-pullman}"
SUBNET_NAME="${SUBNET_NAME:-snet-workers}"
INSTANCE_COUNT="${INSTANCE_COUNT:-2}"
VM_SIZE="${VM_SIZE:-Standard_D4s_v5}"
IMAGE="${IMAGE:-Canonical:0001-com-ubuntu-server-jammy:22_04-lts-gen2:latest}"
ADMIN_USER="${ADMIN_USER:-azureuser}"
SSH_KEY_FILE="${SSH_KEY_FILE:-$HOME/.ssh/id_rsa.pub}"
# The manager as the VMs reach it. Empty: read PULLMAN_HOST and PULLMAN_PORT from
# /etc/pullman/manager.env (when run on the jumpbox).
MANAGER_URL="${MANAGER_URL:-}"
WORKER_TOKEN_FILE="${WORKER_TOKEN_FILE:-/etc/pullman/worker.token}"
SPOT="${SPOT:-false}"                   # true: Spot VMs, evicted VMs are deleted, pay up to on-demand
OVERPROVISION="${OVERPROVISION:-true}"  # false: create exactly INSTANCE_COUNT VMs
CLOUD_INIT="${CLOUD_INIT:-$(dirname "$0")/../cloud-init/worker.yaml}"

die() { printf 'create-vmss: %s\n' "$*" >&2; exit 1; }
command -v az >/dev/null || die "the Azure CLI (az) is not installed"

if [[ -z "$MANAGER_URL" ]]; then
  [[ -r /etc/pullman/manager.env ]] || die "set MANAGER_URL (e.g. http://10.0.0.4:8080)"
  host="$(sed -n 's/^PULLMAN_HOST=//p' /etc/pullman/manager.env | tail -n 1)"
  port="$(sed -n 's/^PULLMAN_PORT=//p' /etc/pullman/manager.env | tail -n 1)"
  [[ -n "$host" ]] || die "no PULLMAN_HOST in /etc/pullman/manager.env; set MANAGER_URL"
  MANAGER_URL="http://$host:${port:-8080}"
fi
if [[ -r "$WORKER_TOKEN_FILE" ]]; then
  token="$(tr -d '[:space:]' <"$WORKER_TOKEN_FILE")"
else
  token="$(sudo cat "$WORKER_TOKEN_FILE" | tr -d '[:space:]')"
fi
[[ -n "$token" ]] || die "$WORKER_TOKEN_FILE is empty"
[[ "$token" =~ ^[A-Za-z0-9._~+/=-]+$ ]] || die "the worker token has unexpected characters"
[[ "$MANAGER_URL" =~ ^https?://[^[:space:]|]+$ ]] || die "MANAGER_URL must be http(s)://host:port"

# The rendered file holds the token: keep it private and delete it afterwards.
umask 077
rendered="$(mktemp)"
trap 'rm -f "$rendered"' EXIT
sed -e "s|__MANAGER_URL__|$MANAGER_URL|g" -e "s|__WORKER_TOKEN__|$token|g" "$CLOUD_INIT" >"$rendered"

subnet_id="$(az network vnet subnet show --resource-group "$RESOURCE_GROUP" --vnet-name "$VNET_NAME" \
  --name "$SUBNET_NAME" --query id --output tsv)"
group_id="$(az group show --name "$RESOURCE_GROUP" --query id --output tsv)"

args=(
  --resource-group "$RESOURCE_GROUP"
  --name "$VMSS_NAME"
  --orchestration-mode Uniform
  --image "$IMAGE"
  --vm-sku "$VM_SIZE"
  --instance-count "$INSTANCE_COUNT"
  --subnet "$subnet_id"
  --public-ip-address ""
  --load-balancer ""
  --admin-username "$ADMIN_USER"
  --upgrade-policy-mode Manual
  --custom-data "$rendered"
  --assign-identity
  --role Reader
  --scope "$group_id"
  --terminate-notification-time 5
)
if [[ -r "$SSH_KEY_FILE" ]]; then
  args+=(--ssh-key-values "$SSH_KEY_FILE")
else
  args+=(--generate-ssh-keys)
fi
if [[ "$SPOT" == true ]]; then
  args+=(--priority Spot --eviction-policy Delete --max-price -1)
fi
if [[ "$OVERPROVISION" != true ]]; then
  args+=(--disable-overprovision)
fi

echo "creating scale set $VMSS_NAME in $RESOURCE_GROUP (workers report to $MANAGER_URL)" >&2
az vmss create "${args[@]}" --output table
echo "done. Watch the workers join: pullman workers (see docs/deploy.md)" >&2
