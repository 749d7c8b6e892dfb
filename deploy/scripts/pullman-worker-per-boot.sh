#!/usr/bin/env bash
# Starts the Pullman worker at every boot from cloud-init's per-boot directory
# (/var/lib/cloud/scripts/per-boot/), for images that do not use the systemd unit.
# It returns at once: the worker waits for Succeeded in the background (wait-ready, then run),
# logging to the journal as `pullman-worker` (journalctl -t pullman-worker). cloud-final.service
# uses KillMode=process, so the detached worker outlives cloud-init.
# Nothing restarts this worker if it exits; the systemd unit (worker.yaml) is the better choice.
set -euo pipefail

node=/usr/local/bin/node
bundle=/opt/pullman/pullman-worker.cjs
work_dir=/var/lib/pullman-worker

if [[ ! -x "$node" || ! -f "$bundle" ]]; then
  # First boot: cloud-init runs per-boot scripts before runcmd, which installs and then calls us.
  echo "pullman-worker: not installed yet ($node, $bundle); runcmd will start it" >&2
  exit 0
fi
install -d -o pullman -g pullman -m 0750 "$work_dir"

# flock: one worker per VM even if this script runs twice. The inner script is quoted on purpose:
# it expands in the worker's shell, as user pullman.
# shellcheck disable=SC2016
setsid systemd-cat -t pullman-worker \
  flock --nonblock /run/pullman-worker.lock \
  runuser -u pullman -- env PULLMAN_WORK_DIR="$work_dir" /bin/sh -c '
    set -a; . /etc/pullman/worker.env; set +a
    cd "$PULLMAN_WORK_DIR" || exit 1
    "$0" "$1" wait-ready && exec "$0" "$1" run' "$node" "$bundle" \
  </dev/null >/dev/null 2>&1 &
echo "pullman-worker: started in the background (journalctl -t pullman-worker)" >&2
