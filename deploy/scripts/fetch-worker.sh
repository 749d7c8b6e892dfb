#!/usr/bin/env bash
# Downloads the worker bundle from the manager named in /etc/pullman/worker.env
# (GET /v1/worker/bundle with the worker token) to /opt/pullman/pullman-worker.cjs.
# Retries for up to 15 minutes, so VMs may boot before the manager is up. The token never
# appears on a command line: curl reads the header from a private file.
set -euo pipefail

ENV_FILE="${PULLMAN_ENV_FILE:-/etc/pullman/worker.env}"
DEST="${PULLMAN_BUNDLE_PATH:-/opt/pullman/pullman-worker.cjs}"
TRIES="${PULLMAN_FETCH_TRIES:-90}"

log() { printf 'fetch-worker: %s\n' "$*" >&2; }
setting() { sed -n "s/^$1=//p" "$ENV_FILE" | tail -n 1; }

manager_url="$(setting PULLMAN_MANAGER_URL)"
token_file="$(setting PULLMAN_WORKER_TOKEN_FILE)"
ca_file="$(setting PULLMAN_CA_FILE)"
if [[ -z "$manager_url" || -z "$token_file" ]]; then
  log "$ENV_FILE must set PULLMAN_MANAGER_URL and PULLMAN_WORKER_TOKEN_FILE"
  exit 2
fi

mkdir -p "$(dirname "$DEST")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
chmod 700 "$tmp"
printf 'Authorization: Bearer %s\n' "$(tr -d '[:space:]' <"$token_file")" >"$tmp/auth"
ca_args=()
if [[ -n "$ca_file" ]]; then ca_args=(--cacert "$ca_file"); fi

url="${manager_url%/}/v1/worker/bundle"
for ((i = 1; i <= TRIES; i++)); do
  status="$(curl -sS --connect-timeout 10 --max-time 300 "${ca_args[@]}" -H "@$tmp/auth" \
    -o "$tmp/bundle" -w '%{http_code}' "$url" 2>"$tmp/err" || true)"
  if [[ "$status" == 200 ]] && head -c 2 "$tmp/bundle" | grep -q '^#!'; then
    install -m 0755 "$tmp/bundle" "$DEST.new"
    mv -f "$DEST.new" "$DEST"
    log "installed $DEST from $url"
    exit 0
  fi
  case "$status" in
    401 | 403) log "the manager refused the worker token ($status): check $token_file" ;;
    000) log "cannot reach $url: $(tr '\n' ' ' <"$tmp/err")" ;;
    *) log "GET $url answered $status" ;;
  esac
  log "attempt $i of $TRIES failed; retrying in 10 s"
  sleep 10
done
log "giving up on $url"
exit 1
