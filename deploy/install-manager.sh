#!/usr/bin/env bash
# Installs (or upgrades) the Pullman manager on this machine, the jumpbox, from a release tarball:
#
#   sudo ./install-manager.sh pullman-0.1.0.tgz
#
# Idempotent: run it again with the same or a newer tarball. It
#   - creates the system user `pullman` and /opt/pullman, /etc/pullman, /var/lib/pullman;
#   - installs Node.js 20 into /usr/local/bin unless it is there (scripts/install-node.sh);
#   - unpacks the release into /opt/pullman/releases/<name>, runs `npm ci --omit=dev` there, and
#     points /opt/pullman/current at it, and links the `pullman` CLI into /usr/local/bin;
#   - generates /etc/pullman/admin.token and /etc/pullman/worker.token (mode 0600) if missing;
#   - writes /etc/pullman/manager.env if missing, with PULLMAN_HOST = this VM's VNet address
#     (from Azure IMDS, else `hostname -I`); set PULLMAN_HOST=... to choose another;
#   - installs pullman-manager.service, enables it, and (re)starts it when something changed.
set -euo pipefail

PREFIX=/opt/pullman
ETC=/etc/pullman
DATA=/var/lib/pullman
UNIT=/etc/systemd/system/pullman-manager.service
PORT="${PULLMAN_PORT:-8080}"
export PATH="/usr/local/bin:$PATH"

log() { printf 'install-manager: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

tarball="${1:-}"
[[ -n "$tarball" && -f "$tarball" ]] || die "usage: sudo $0 release/pullman-<version>.tgz"
[[ "$(id -u)" -eq 0 ]] || die "run as root (sudo)"
here="$(cd "$(dirname "$0")" && pwd)"

# 1. User and directories.
if ! id -u pullman >/dev/null 2>&1; then
  useradd --system --home-dir "$DATA" --no-create-home --shell /usr/sbin/nologin pullman
  log "created user pullman"
fi
install -d -m 0755 "$PREFIX" "$PREFIX/releases"
install -d -m 0750 -o root -g pullman "$ETC"
install -d -m 0750 -o pullman -g pullman "$DATA"

# 2. Node.js 20, unless already there.
NODE_MAJOR=20 "$here/scripts/install-node.sh"

# 3. The release.
name="$(tar -tzf "$tarball" | head -n 1 | cut -d/ -f1)"
[[ "$name" =~ ^pullman-[0-9A-Za-z.+-]+$ ]] || die "$tarball is not a Pullman release (top folder: $name)"
dest="$PREFIX/releases/$name"
if [[ ! -f "$dest/.installed" ]]; then
  log "installing $name into $dest"
  rm -rf "$dest.partial"
  mkdir -p "$dest.partial"
  tar -xzf "$tarball" -C "$dest.partial" --strip-components=1 --no-same-owner
  (cd "$dest.partial" && npm ci --omit=dev --no-audit --no-fund --loglevel=error)
  touch "$dest.partial/.installed"
  rm -rf "$dest"
  mv "$dest.partial" "$dest"
fi
changed=false
if [[ "$(readlink "$PREFIX/current" 2>/dev/null || true)" != "$dest" ]]; then
  ln -sfn "$dest" "$PREFIX/current.new"
  mv -T "$PREFIX/current.new" "$PREFIX/current"
  changed=true
fi

# The CLI, for `pullman workers` and friends on this machine.
if [[ -f "$PREFIX/current/pullman.mjs" ]]; then
  ln -sfn "$PREFIX/current/pullman.mjs" /usr/local/bin/pullman
fi

# 4. Tokens: generated once, never overwritten.
for role in admin worker; do
  file="$ETC/$role.token"
  if [[ ! -s "$file" ]]; then
    (umask 077 && head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' >"$file")
    log "generated $file"
  fi
  chown pullman:pullman "$file"
  chmod 0600 "$file"
done

# 5. Settings: the VNet address the workers will use. Written once; edit it by hand later.
if [[ ! -f "$ETC/manager.env" ]]; then
  host="${PULLMAN_HOST:-}"
  if [[ -z "$host" ]]; then
    host="$(curl -fsS --noproxy '*' --max-time 3 -H 'Metadata: true' \
      'http://169.254.169.254/metadata/instance/network/interface/0/ipv4/ipAddress/0/privateIpAddress?api-version=2021-02-01&format=text' 2>/dev/null || true)"
  fi
  if [[ -z "$host" ]]; then host="$(hostname -I | awk '{print $1}')"; fi
  [[ -n "$host" ]] || die "cannot find this machine's address; run again with PULLMAN_HOST=<address>"
  cat >"$ETC/manager.env" <<ENV
# Pullman manager settings (docs/configuration.md). Read by pullman-manager.service.
# The address workers reach the manager on: this machine's VNet address.
PULLMAN_HOST=$host
PULLMAN_PORT=$PORT
# PULLMAN_LEASE_TTL=30s
# PULLMAN_DB_SYNC=normal
# PULLMAN_LOG_LEVEL=info
ENV
  chmod 0644 "$ETC/manager.env"
  log "wrote $ETC/manager.env (PULLMAN_HOST=$host)"
fi

# 6. The unit.
if ! cmp -s "$dest/deploy/systemd/pullman-manager.service" "$UNIT"; then
  install -m 0644 "$dest/deploy/systemd/pullman-manager.service" "$UNIT"
  changed=true
fi
systemctl daemon-reload
systemctl enable pullman-manager.service >/dev/null
if [[ "$changed" == true ]]; then
  systemctl restart pullman-manager.service
else
  systemctl start pullman-manager.service
fi

# 7. Wait until it answers.
host="$(sed -n 's/^PULLMAN_HOST=//p' "$ETC/manager.env" | tail -n 1)"
port="$(sed -n 's/^PULLMAN_PORT=//p' "$ETC/manager.env" | tail -n 1)"
url="http://$host:${port:-8080}"
for _ in $(seq 1 30); do
  if curl -fsS --noproxy '*' --max-time 2 "$url/healthz" >/dev/null 2>&1; then
    log "the manager is running at $url ($name)"
    log "admin token: $ETC/admin.token   worker token: $ETC/worker.token"
    exit 0
  fi
  sleep 1
done
die "the manager did not answer at $url/healthz; see: journalctl -u pullman-manager"
