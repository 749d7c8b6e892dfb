#!/usr/bin/env node
/**
 * The cloud-configs embed copies of files kept in deploy/scripts and deploy/systemd, so each
 * works alone as custom data. This copies the canonical files into every write_files entry
 * whose path is listed below. test/deploy.test.ts fails when a copy is stale:
 *
 *   node deploy/cloud-init/sync.mjs
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const deploy = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Path on the VM -> canonical file under deploy/. */
export const EMBEDDED = {
  '/usr/local/lib/pullman/install-node.sh': 'scripts/install-node.sh',
  '/usr/local/lib/pullman/fetch-worker.sh': 'scripts/fetch-worker.sh',
  '/usr/local/lib/pullman/setup-worker.sh': 'scripts/setup-worker.sh',
  '/usr/local/lib/pullman/setup-worker-per-boot.sh': 'scripts/setup-worker-per-boot.sh',
  '/var/lib/cloud/scripts/per-boot/pullman-worker.sh': 'scripts/pullman-worker-per-boot.sh',
  '/etc/systemd/system/pullman-worker.service': 'systemd/pullman-worker.service',
};

export const CLOUD_CONFIGS = ['cloud-init/worker.yaml', 'cloud-init/worker-per-boot.yaml'];

/** Replaces the `content: |` block of each known write_files entry (indented 6 spaces). */
export function sync(yaml) {
  const lines = yaml.split('\n');
  const out = [];
  for (let i = 0; i < lines.length; i++) {
    out.push(lines[i]);
    const m = /^  - path: (\S+)$/.exec(lines[i]);
    if (!m || !EMBEDDED[m[1]]) continue;
    // Copy the entry's other keys up to `content: |`.
    while (i + 1 < lines.length && !/^    content: \|$/.test(lines[i + 1])) {
      if (/^  (- |\S)/.test(lines[i + 1]) || /^\S/.test(lines[i + 1])) throw new Error(`${m[1]}: no "content: |" block`);
      out.push(lines[++i]);
    }
    out.push(lines[++i]);
    // Skip the old block: blank lines and lines indented at least 6 spaces.
    while (i + 1 < lines.length && (lines[i + 1] === '' || lines[i + 1].startsWith('      '))) i++;
    const body = readFileSync(join(deploy, EMBEDDED[m[1]]), 'utf8').replace(/\n$/, '');
    for (const l of body.split('\n')) out.push(l === '' ? '' : `      ${l}`);
  }
  return out.join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  for (const file of CLOUD_CONFIGS) {
    const path = join(deploy, file);
    const before = readFileSync(path, 'utf8');
    const after = sync(before);
    if (after !== before) {
      writeFileSync(path, after);
      process.stdout.write(`updated ${file}\n`);
    }
  }
}
