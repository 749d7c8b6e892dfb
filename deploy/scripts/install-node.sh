#!/usr/bin/env bash
# Installs Node.js (default: the newest 20.x) from the official nodejs.org Linux tarball into
# /opt/nodejs and links node, npm and npx into /usr/local/bin. The tarball is checked against
# nodejs.org's SHASUMS256.txt before anything is unpacked. Idempotent: does nothing when
# /usr/local/bin/node already is the wanted major version (or the exact NODE_VERSION).
#
#   NODE_MAJOR=20            major version to install
#   NODE_VERSION=v20.20.2    an exact version instead of the newest of NODE_MAJOR
#   NODE_DIST=https://nodejs.org/dist   mirror to download from
set -euo pipefail

NODE_MAJOR="${NODE_MAJOR:-20}"
NODE_VERSION="${NODE_VERSION:-}"
NODE_DIST="${NODE_DIST:-https://nodejs.org/dist}"
PREFIX=/opt/nodejs
BIN=/usr/local/bin

log() { printf 'install-node: %s\n' "$*" >&2; }

if [[ -x "$BIN/node" ]]; then
  have="$("$BIN/node" --version 2>/dev/null || true)"
  if [[ -n "$NODE_VERSION" && "$have" == "$NODE_VERSION" ]] || [[ -z "$NODE_VERSION" && "$have" == "v$NODE_MAJOR."* ]]; then
    log "Node.js $have is already installed at $BIN/node"
    exit 0
  fi
fi

case "$(uname -m)" in
  x86_64) arch=x64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) log "unsupported machine type $(uname -m)"; exit 1 ;;
esac

if [[ -n "$NODE_VERSION" ]]; then
  base="$NODE_DIST/$NODE_VERSION"
else
  base="$NODE_DIST/latest-v$NODE_MAJOR.x"
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fetch() { curl -fsSL --retry 10 --retry-delay 3 --retry-connrefused --connect-timeout 20 -o "$2" "$1"; }

fetch "$base/SHASUMS256.txt" "$tmp/SHASUMS256.txt"
tarball="$(grep -oE "node-v[0-9]+\.[0-9]+\.[0-9]+-linux-$arch\.tar\.gz" "$tmp/SHASUMS256.txt" | head -n 1 || true)"
if [[ -z "$tarball" ]]; then
  log "no linux-$arch tarball listed in $base/SHASUMS256.txt"
  exit 1
fi
version="${tarball#node-}"
version="${version%%-linux-*}"

log "downloading $base/$tarball"
fetch "$base/$tarball" "$tmp/$tarball"
(cd "$tmp" && grep -E "  $tarball\$" SHASUMS256.txt | sha256sum --check --status) || {
  log "SHA-256 of $tarball does not match SHASUMS256.txt: refusing to install"
  exit 1
}

dest="$PREFIX/node-$version-linux-$arch"
mkdir -p "$PREFIX"
rm -rf "$dest.partial"
mkdir "$dest.partial"
tar -xzf "$tmp/$tarball" -C "$dest.partial" --strip-components=1 --no-same-owner
rm -rf "$dest"
mv "$dest.partial" "$dest"
ln -sfn "$dest" "$PREFIX/current"
for tool in node npm npx; do
  ln -sfn "$PREFIX/current/bin/$tool" "$BIN/$tool"
done
log "installed Node.js $("$BIN/node" --version) at $dest"
