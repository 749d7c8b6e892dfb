#!/usr/bin/env bash
# First-boot setup of a Pullman worker VM without the systemd unit
# (deploy/cloud-init/worker-per-boot.yaml writes this file and runs it from runcmd). Idempotent.
set -euo pipefail

id -u pullman >/dev/null 2>&1 || useradd --system --home-dir /var/lib/pullman-worker --shell /usr/sbin/nologin pullman
chown pullman:pullman /etc/pullman/worker.token
chmod 0600 /etc/pullman/worker.token

/usr/local/lib/pullman/install-node.sh
/usr/local/lib/pullman/fetch-worker.sh

# cloud-init ran the per-boot script before this runcmd, when nothing was installed yet: start
# the worker now. From the next boot on, cloud-init starts it. It returns at once.
/var/lib/cloud/scripts/per-boot/pullman-worker.sh
