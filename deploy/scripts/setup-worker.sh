#!/usr/bin/env bash
# First-boot setup of a Pullman worker VM with the systemd unit (deploy/cloud-init/worker.yaml
# writes this file and runs it from runcmd). Idempotent.
set -euo pipefail

id -u pullman >/dev/null 2>&1 || useradd --system --home-dir /var/lib/pullman-worker --shell /usr/sbin/nologin pullman
chown pullman:pullman /etc/pullman/worker.token
chmod 0600 /etc/pullman/worker.token

/usr/local/lib/pullman/install-node.sh
/usr/local/lib/pullman/fetch-worker.sh

# Start the unit and return at once. Never wait for it here: the unit's ExecStartPre waits for
# this VM to be Succeeded, which may only happen after cloud-init and the extensions finish.
systemctl daemon-reload
systemctl enable --now --no-block pullman-worker.service
