/**
 * The deploy kit (deploy/, docs/deploy.md) checked with real validators, and the artifacts it
 * ships checked by running them:
 * - systemd units: `systemd-analyze verify` (any output fails: typos only warn);
 * - cloud-configs: `cloud-init schema`, our own list of allowed top-level keys, and the embedded
 *   copies of deploy/scripts and deploy/systemd are current;
 * - every shell script, including those embedded in cloud-configs: `shellcheck`;
 * - the ARM template: identity, Reader role assignment, custom data, terminate notifications,
 *   parameters; create-vmss.sh against a fake `az`;
 * - the single-file worker bundle, alone in an empty directory, against a real manager (and
 *   against the fake Azure, which exercises the bundled @azure/identity and arm-compute);
 * - the release tarball: unpacked, `npm ci --omit=dev`, the manager started from it.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { createInterface } from 'node:readline';
import { basename, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AUTHORIZATION_FAILED, FakeAzure, UNIFORM_VM } from './fakes/fake-azure.js';
import { finished, killAll, startManager, tempDir, until } from './harness.js';
// write_files paths that are copies of files under deploy/: the same table the sync script uses.
import { EMBEDDED } from '../deploy/cloud-init/sync.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const deploy = join(root, 'deploy');
const BUNDLE = join(root, 'apps/worker/dist/pullman-worker.cjs');
const MANAGER_JS = join(root, 'apps/manager/dist/server.js');

function filesUnder(dir: string, pred: (f: string) => boolean): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(p, pred));
    else if (pred(p)) out.push(p);
  }
  return out.sort();
}

function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', cwd: opts.cwd, env: opts.env ?? process.env });
  if (r.error) throw new Error(`${cmd} is not installed (.ci/run installs it): ${r.error.message}`);
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Parses YAML with the PyYAML that cloud-init itself uses. */
function loadYaml(file: string): Record<string, any> {
  const r = run('python3', ['-c', 'import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)', file]);
  if (r.code !== 0) throw new Error(`${file}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

const CLOUD_CONFIGS = filesUnder(join(deploy, 'cloud-init'), (f) => /\.ya?ml$/.test(f));
/** Top-level keys our cloud-configs may use. cloud-init ignores unknown keys silently. */
const ALLOWED_CLOUD_CONFIG_KEYS = ['users', 'write_files', 'runcmd', 'package_update', 'packages', 'bootcmd', 'final_message'];

/** `[Section] Key=value` lines of a unit (last value wins, as in systemd for most keys). */
function unitSettings(text: string): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (m) (out[m[1]!] ??= []).push(m[2]!);
  }
  return out;
}
const seconds = (v: string): number => {
  const m = /^(\d+)(min|s|h)?$/.exec(v);
  if (!m) throw new Error(`unexpected timespan ${v}`);
  return Number(m[1]) * (m[2] === 'min' ? 60 : m[2] === 'h' ? 3600 : 1);
};

describe('systemd units', () => {
  const unitDir = tempDir('units');
  // ExecStart paths must exist for verify: point them at this machine's node and our builds.
  const substitutions: Array<[string, string]> = [
    ['/usr/local/bin/node', process.execPath],
    ['/opt/pullman/pullman-worker.cjs', BUNDLE],
    ['/opt/pullman/current/pullman-manager.mjs', MANAGER_JS],
  ];

  for (const unit of ['pullman-worker.service', 'pullman-manager.service']) {
    it(`${unit} passes systemd-analyze verify with no output at all`, () => {
      expect(existsSync(BUNDLE), 'the worker bundle is built by `npm run build`').toBe(true);
      let text = readFileSync(join(deploy, 'systemd', unit), 'utf8');
      for (const [from, to] of substitutions) text = text.split(from).join(to);
      const file = join(unitDir, unit);
      writeFileSync(file, text);
      const r = run('systemd-analyze', ['verify', file], { env: { ...process.env, SYSTEMD_LOG_COLOR: '0' } });
      expect(r.stderr + r.stdout).toBe('');
      expect(r.code).toBe(0);
    });
  }

  it('the worker unit gates, drains and restarts as documented', () => {
    const s = unitSettings(readFileSync(join(deploy, 'systemd/pullman-worker.service'), 'utf8'));
    expect(s.EnvironmentFile).toEqual(['/etc/pullman/worker.env']);
    expect(s.ExecStartPre).toEqual(['/usr/local/bin/node /opt/pullman/pullman-worker.cjs wait-ready']);
    expect(s.ExecStart).toEqual(['/usr/local/bin/node /opt/pullman/pullman-worker.cjs run']);
    expect(seconds(s.TimeoutStartSec![0]!)).toBeGreaterThan(60 * 60); // the gate's 60 min default
    expect(s.Restart).toEqual(['always']);
    expect(seconds(s.RestartSec![0]!)).toBeGreaterThan(0);
    expect(s.RestartPreventExitStatus).toEqual(['0']);
    expect(s.KillSignal).toEqual(['SIGTERM']);
    expect(s.KillMode).toEqual(['mixed']);
    expect(seconds(s.TimeoutStopSec![0]!)).toBeGreaterThan(10 * 60 + 30 + 10); // drain + flush + kill grace
    expect(s.User).toEqual(['pullman']);
    expect(s.StateDirectory).toEqual(['pullman-worker']);
    expect(s.Environment).toContain('PULLMAN_WORK_DIR=/var/lib/pullman-worker');
    expect(s.OOMPolicy).toEqual(['continue']);
    // Restrictions that tasks (JITs, arbitrary programs) would inherit and break on.
    expect(s.MemoryDenyWriteExecute).toBeUndefined();
    expect(s.SystemCallFilter).toBeUndefined();
    for (const k of ['NoNewPrivileges', 'PrivateTmp', 'ProtectKernelTunables', 'ProtectKernelModules', 'ProtectControlGroups', 'RestrictSUIDSGID', 'LockPersonality']) expect(s[k], k).toEqual(['yes']);
  });

  it('the manager unit keeps data in /var/lib/pullman and reads tokens from files', () => {
    const s = unitSettings(readFileSync(join(deploy, 'systemd/pullman-manager.service'), 'utf8'));
    expect(s.StateDirectory).toEqual(['pullman']);
    expect(s.Environment).toEqual(expect.arrayContaining(['PULLMAN_DATA_DIR=/var/lib/pullman', 'PULLMAN_ADMIN_TOKEN_FILE=/etc/pullman/admin.token', 'PULLMAN_WORKER_TOKEN_FILE=/etc/pullman/worker.token']));
    expect(s.EnvironmentFile).toEqual(['/etc/pullman/manager.env']);
    expect(s.ProtectSystem).toEqual(['strict']);
    expect(s.KillSignal).toEqual(['SIGTERM']);
  });
});

describe('cloud-init', () => {
  it('finds the cloud-configs', () => {
    expect(CLOUD_CONFIGS.map((f) => basename(f))).toEqual(['worker-per-boot.yaml', 'worker.yaml']);
  });

  for (const file of CLOUD_CONFIGS) {
    const name = relative(root, file);
    it(`${name} is a valid cloud-config, as shipped and rendered`, () => {
      const rendered = join(tempDir('ci'), basename(file));
      writeFileSync(rendered, readFileSync(file, 'utf8').replaceAll('__MANAGER_URL__', 'http://10.0.0.4:8080').replaceAll('__WORKER_TOKEN__', 'x'.repeat(43)));
      for (const f of [file, rendered]) {
        const r = run('cloud-init', ['schema', '--config-file', f]);
        expect(r.code, r.stderr + r.stdout).toBe(0);
        expect(r.stdout).toContain('Valid cloud-config');
      }
      const text = readFileSync(file, 'utf8');
      expect(text.split('\n')[0]).toBe('#cloud-config');
      // Custom data is limited to 64 KiB once base64-encoded.
      expect(Buffer.from(text).toString('base64').length).toBeLessThan(64 * 1024);
    });

    it(`${name} uses only known top-level keys and current copies of deploy/ files`, () => {
      const doc = loadYaml(file);
      expect(Object.keys(doc).filter((k) => !ALLOWED_CLOUD_CONFIG_KEYS.includes(k))).toEqual([]);
      // The admin user from the scale set (the "default" user) must still be created.
      expect(doc.users[0]).toBe('default');
      expect(doc.users.some((u: any) => u?.name === 'pullman')).toBe(true);
      const files = doc.write_files as Array<{ path: string; content: string; permissions?: string }>;
      const env = files.find((f) => f.path === '/etc/pullman/worker.env')!;
      expect(env.content).toMatch(/^PULLMAN_MANAGER_URL=__MANAGER_URL__$/m);
      expect(env.content).toMatch(/^PULLMAN_WORKER_TOKEN_FILE=\/etc\/pullman\/worker.token$/m);
      expect(files.find((f) => f.path === '/etc/pullman/worker.token')).toMatchObject({ permissions: '0600', content: '__WORKER_TOKEN__\n' });
      let embedded = 0;
      for (const f of files) {
        const source = EMBEDDED[f.path];
        if (!source) continue;
        embedded++;
        expect(f.content, `${f.path} in ${name} is stale: run node deploy/cloud-init/sync.mjs`).toBe(readFileSync(join(deploy, source), 'utf8'));
      }
      expect(embedded).toBeGreaterThanOrEqual(4);
    });
  }

  it('the unit variant enables the unit without blocking; the per-boot variant detaches', () => {
    expect(readFileSync(join(deploy, 'scripts/setup-worker.sh'), 'utf8')).toContain('systemctl enable --now --no-block pullman-worker.service');
    const perBoot = loadYaml(join(deploy, 'cloud-init/worker-per-boot.yaml'));
    expect(perBoot.write_files.some((f: any) => f.path.startsWith('/var/lib/cloud/scripts/per-boot/') && f.permissions === '0755')).toBe(true);
    const script = readFileSync(join(deploy, 'scripts/pullman-worker-per-boot.sh'), 'utf8');
    expect(script).toMatch(/setsid systemd-cat -t pullman-worker/);
    expect(script).toMatch(/wait-ready && exec/);
  });
});

describe('shell scripts', () => {
  const scripts = filesUnder(deploy, (f) => f.endsWith('.sh'));
  it('finds them all', () => {
    expect(scripts.map((f) => relative(deploy, f))).toEqual(expect.arrayContaining(['install-manager.sh', 'azure/create-vmss.sh', 'azure/add-custom-script-extension.sh', 'scripts/install-node.sh']));
  });

  it('every script is executable, strict, and shellcheck-clean (including those inside cloud-configs)', () => {
    const dir = tempDir('embedded');
    const all = [...scripts];
    for (const file of CLOUD_CONFIGS) {
      for (const f of loadYaml(file).write_files as Array<{ path: string; content: string }>) {
        if (!/^#!.*\b(ba|da)?sh\b/.test(f.content)) continue;
        const out = join(dir, `${basename(file, '.yaml')}${f.path.replaceAll('/', '_')}`);
        writeFileSync(out, f.content);
        all.push(out);
      }
    }
    expect(all.length).toBeGreaterThan(scripts.length);
    for (const f of scripts) {
      expect(statSync(f).mode & 0o111, `${f} is executable`).not.toBe(0);
      expect(readFileSync(f, 'utf8'), f).toMatch(/^#!\/usr\/bin\/env bash\n[\s\S]*^set -euo pipefail$/m);
    }
    const r = run('shellcheck', ['--format=gcc', ...all]);
    expect(r.stdout + r.stderr).toBe('');
    expect(r.code).toBe(0);
  });
});

describe('Azure', () => {
  const template = JSON.parse(readFileSync(join(deploy, 'azure/vmss.json'), 'utf8'));
  const vmss = template.resources.find((r: any) => r.type === 'Microsoft.Compute/virtualMachineScaleSets');
  const role = template.resources.find((r: any) => r.type === 'Microsoft.Authorization/roleAssignments');

  it('the template has the parameters a user sets', () => {
    expect(template.$schema).toMatch(/deploymentTemplate\.json#$/);
    const p = template.parameters;
    for (const [name, type] of Object.entries({ vmssName: 'string', instanceCount: 'int', vmSize: 'string', subnetId: 'string', adminUsername: 'string', sshPublicKey: 'string', cloudInit: 'securestring', overprovision: 'bool', priority: 'string' })) {
      expect(p[name]?.type, name).toBe(type);
    }
    expect(p.priority.allowedValues).toEqual(['Regular', 'Spot']);
    // Every parameter is used, and everything used is declared.
    const text = JSON.stringify(template.resources) + JSON.stringify(template.variables);
    for (const name of Object.keys(p)) expect(text, name).toContain(`parameters('${name}')`);
    for (const [, used] of text.matchAll(/parameters\('(\w+)'\)/g)) expect(p[used!], used).toBeDefined();
  });

  it('the scale set has a system-assigned identity, the cloud-config as custom data, and terminate notifications', () => {
    expect(vmss.identity).toEqual({ type: 'SystemAssigned' });
    expect(vmss.properties.overprovision).toBe("[parameters('overprovision')]");
    const profile = vmss.properties.virtualMachineProfile;
    expect(profile.osProfile.customData).toBe("[base64(parameters('cloudInit'))]");
    expect(profile.scheduledEventsProfile).toEqual({ terminateNotificationProfile: { enable: true, notBeforeTimeout: 'PT5M' } });
    expect(profile.priority).toBe("[parameters('priority')]");
    expect(profile.evictionPolicy).toMatch(/^\[if\(variables\('isSpot'\), 'Delete', null\(\)\)\]$/);
    expect(profile.billingProfile).toMatch(/^\[if\(variables\('isSpot'\), createObject\('maxPrice', parameters\('spotMaxPrice'\)\), null\(\)\)\]$/);
    expect(template.parameters.spotMaxPrice.defaultValue).toBe(-1);
    expect(template.variables.isSpot).toBe("[equals(parameters('priority'), 'Spot')]");
    expect(vmss.properties.upgradePolicy.mode).toBe("[parameters('upgradePolicyMode')]");
    expect(profile.networkProfile.networkInterfaceConfigurations[0].properties.ipConfigurations[0].properties.subnet.id).toBe("[parameters('subnetId')]");
  });

  it('grants the scale set identity Reader on the resource group', () => {
    expect(role.dependsOn).toEqual(["[variables('vmssId')]"]);
    expect(role.scope).toBeUndefined(); // a resource-group deployment: the group is the scope
    expect(template.variables.readerRoleDefinitionId).toBe("[subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'acdd72a7-3385-48ef-bd42-f606fba81ae7')]");
    expect(role.properties.roleDefinitionId).toBe("[variables('readerRoleDefinitionId')]");
    expect(role.properties.principalId).toMatch(/^\[reference\(variables\('vmssId'\), '[\d-]+', 'full'\)\.identity\.principalId\]$/);
    expect(role.properties.principalType).toBe('ServicePrincipal');
    expect(role.name).toMatch(/^\[guid\(/);
  });

  it('the Custom Script Extension only enables the unit and returns at once', () => {
    const settings = JSON.parse(readFileSync(join(deploy, 'azure/custom-script-extension.json'), 'utf8'));
    expect(Object.keys(settings)).toEqual(['commandToExecute']);
    expect(settings.commandToExecute).toBe('systemctl enable --now --no-block pullman-worker.service');
    const script = readFileSync(join(deploy, 'azure/add-custom-script-extension.sh'), 'utf8');
    expect(script).toMatch(/deadlock/);
    expect(script).toMatch(/overprovisioning/i);
  });

  it('create-vmss.sh renders the cloud-config and calls az vmss create with identity, Reader scope and notifications', () => {
    const dir = tempDir('az');
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    const log = join(dir, 'az.log');
    // A fake az: records each call (and the custom data file, which the script deletes after).
    writeFileSync(join(bin, 'az'), `#!/usr/bin/env bash
printf '%s\\n' "$*" >> "${log}"
case "$1 $2" in
  "network vnet") echo /subscriptions/S/resourceGroups/rg-test/providers/Microsoft.Network/virtualNetworks/v/subnets/s ;;
  "group show") echo /subscriptions/S/resourceGroups/rg-test ;;
  "vmss create")
    while [ $# -gt 0 ]; do if [ "$1" = --custom-data ]; then cp "$2" "${dir}/custom-data.yaml"; fi; shift; done ;;
esac
`);
    chmodSync(join(bin, 'az'), 0o755);
    const token = join(dir, 'worker.token');
    writeFileSync(token, 'tok_EN-0123456789abcdefghij\n');
    const env = { PATH: `${bin}:${process.env.PATH}`, HOME: dir, RESOURCE_GROUP: 'rg-test', VMSS_NAME: 'w', MANAGER_URL: 'http://10.1.0.4:8080', WORKER_TOKEN_FILE: token, SPOT: 'true', OVERPROVISION: 'false' };
    const r = run('bash', [join(deploy, 'azure/create-vmss.sh')], { env });
    expect(r.code, r.stderr).toBe(0);
    const create = readFileSync(log, 'utf8').split('\n').find((l) => l.startsWith('vmss create'))!;
    for (const arg of ['--resource-group rg-test', '--name w', '--orchestration-mode Uniform', '--assign-identity', '--role Reader', '--scope /subscriptions/S/resourceGroups/rg-test', '--terminate-notification-time 5', '--priority Spot --eviction-policy Delete --max-price -1', '--disable-overprovision', '--subnet /subscriptions/S/', '--generate-ssh-keys']) {
      expect(create).toContain(arg);
    }
    const rendered = readFileSync(join(dir, 'custom-data.yaml'), 'utf8');
    expect(rendered).toContain('PULLMAN_MANAGER_URL=http://10.1.0.4:8080');
    expect(rendered).toContain('      tok_EN-0123456789abcdefghij\n');
    expect(rendered).not.toMatch(/__[A-Z_]+__/);
    const check = join(dir, 'check.yaml');
    writeFileSync(check, rendered);
    expect(run('cloud-init', ['schema', '--config-file', check]).code).toBe(0);
  });
});

/** The bundle as a process of its own: only node and the one file. */
interface BundleProc {
  proc: ChildProcess;
  logs: Array<Record<string, any>>;
  stderr(): string;
  exited: Promise<number | null>;
}
const bundleProcs: ChildProcess[] = [];
function runBundle(dir: string, args: string[], env: Record<string, string>): BundleProc {
  const proc = spawn(process.execPath, [join(dir, 'pullman-worker.cjs'), ...args], { cwd: dir, env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  bundleProcs.push(proc);
  const logs: Array<Record<string, any>> = [];
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  createInterface({ input: proc.stdout! }).on('line', (l) => {
    if (l.startsWith('{')) logs.push(JSON.parse(l));
  });
  return { proc, logs, stderr: () => err, exited: once(proc, 'exit').then(([code]) => code as number | null) };
}

describe('the single-file worker bundle', () => {
  let dir: string;
  let azure: FakeAzure | undefined;
  beforeAll(() => {
    expect(existsSync(BUNDLE), 'apps/worker/dist/pullman-worker.cjs is built by `npm run build`').toBe(true);
  });
  afterEach(async () => {
    for (const p of bundleProcs.splice(0)) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    await killAll();
    await azure?.stop();
    azure = undefined;
  });
  const isolated = (): string => {
    dir = tempDir('bundle');
    copyFileSync(BUNDLE, join(dir, 'pullman-worker.cjs'));
    expect(readdirSync(dir)).toEqual(['pullman-worker.cjs']);
    return dir;
  };

  it('is one CommonJS file with a node shebang', () => {
    const text = readFileSync(BUNDLE, 'utf8');
    expect(text.startsWith('#!/usr/bin/env node\n')).toBe(true);
    expect(statSync(BUNDLE).mode & 0o111).not.toBe(0);
    // Nothing is left to load from node_modules except optional modules required in try/catch.
    const required = new Set([...text.matchAll(/\brequire\("([^"]+)"\)/g)].map((m) => m[1]!).filter((m) => !m.startsWith('node:')));
    const builtins = new Set(builtinModules);
    expect([...required].filter((m) => !builtins.has(m)).sort()).toEqual(['bufferutil', 'supports-color', 'utf-8-validate']);
  });

  it('runs alone in an empty directory with plain node: registers and completes tasks', async () => {
    const m = await startManager();
    const d = isolated();
    const w = runBundle(d, ['run'], { PULLMAN_MANAGER_URL: m.url, PULLMAN_WORKER_TOKEN: m.workerToken, PULLMAN_NAME: 'bundled', PULLMAN_SLOTS: '2', PULLMAN_READY: 'none', PULLMAN_WORK_DIR: join(d, 'work') });
    await until('the bundled worker to register', async () => ((await m.api.workers()).some((x) => x.name === 'bundled' && x.state !== 'gone') ? true : undefined), 60_000);
    const job = await m.api.createJob({ name: 'bundle', tasks: Array.from({ length: 6 }, (_, i) => ({ key: `t${i}`, shell: `echo out-${i}; echo '{"i":${i}}' > "$PULLMAN_OUTPUT"` })) });
    const done = await finished(m.api, job.id, 60_000);
    expect(done.state).toBe('succeeded');
    expect(done.counts.succeeded).toBe(6);
    const results = await m.api.results(job.id);
    expect(results.map((r) => r.output).sort((a: any, b: any) => a.i - b.i)).toEqual(Array.from({ length: 6 }, (_, i) => ({ i })));
    const [worker] = (await m.api.workers()).filter((x) => x.name === 'bundled');
    expect(worker!.tasksSucceeded).toBe(6);
    // SIGTERM drains and exits 0, as systemd's stop does.
    w.proc.kill('SIGTERM');
    expect(await w.exited).toBe(0);
  });

  it('downloads from the manager (GET /v1/worker/bundle) byte for byte', async () => {
    const m = await startManager();
    const res = await fetch(`${m.url}/v1/worker/bundle`, { headers: { authorization: `Bearer ${m.workerToken}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/javascript/);
    expect(res.headers.get('etag')).toMatch(/^"sha256-/);
    expect(Buffer.from(await res.arrayBuffer()).equals(readFileSync(BUNDLE))).toBe(true);
  });

  it('passes the Azure gate with the bundled identity and ARM clients, and names the missing role on 403', async () => {
    azure = await FakeAzure.start(UNIFORM_VM);
    const d = isolated();
    azure.provisioningStates = ['Creating', 'Succeeded'];
    const ok = runBundle(d, ['wait-ready'], { ...azure.env(), PULLMAN_READY: 'azure', PULLMAN_READY_INTERVAL: '200ms' });
    expect(await ok.exited, ok.stderr()).toBe(0);
    expect(ok.logs.some((l) => l.msg === 'ready' && l.vm?.name === 'pull_3')).toBe(true);
    expect(azure.requests.some((r) => r.server === 'imds' && r.path.startsWith('/metadata/identity/oauth2/token'))).toBe(true);

    azure.armScript.push(AUTHORIZATION_FAILED);
    const denied = runBundle(d, ['wait-ready'], { ...azure.env(), PULLMAN_READY: 'azure', PULLMAN_READY_INTERVAL: '200ms' });
    expect(await denied.exited).toBe(6);
    // The line docs/deploy.md shows under "A worker stuck waiting".
    expect(denied.stderr()).toMatch(/^pullman-worker: ARM refused to read this VM \(403/);
    expect(denied.stderr()).toContain('needs the Reader role on the VM or its resource group');
    expect(denied.logs.find((l) => l.level === 50)).toMatchObject({ reason: 'forbidden' });
  });
});

describe('the release tarball', () => {
  afterEach(killAll);

  it('unpacks, installs with npm ci --omit=dev, and runs the manager, which serves the worker bundle', { timeout: 600_000 }, async () => {
    const out = tempDir('release');
    const built = execFileSync(process.execPath, [join(root, 'scripts/release.mjs')], { env: { ...process.env, PULLMAN_RELEASE_DIR: out }, encoding: 'utf8' }).trim();
    const version = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version as string;
    expect(built).toBe(join(out, `pullman-${version}.tgz`));
    const unpack = tempDir('jumpbox');
    execFileSync('tar', ['-xzf', built, '-C', unpack]);
    const home = join(unpack, `pullman-${version}`);
    // pullman.mjs (the CLI) is there when apps/cli is built.
    expect(readdirSync(home).filter((f) => f !== 'pullman.mjs').sort()).toEqual(['README.md', 'deploy', 'docs', 'package-lock.json', 'package.json', 'pullman-manager.mjs', 'pullman-worker.cjs']);
    expect(existsSync(join(home, 'deploy/install-manager.sh'))).toBe(true);
    expect(existsSync(join(home, 'docs/deploy.md'))).toBe(true);
    const pkg = JSON.parse(readFileSync(join(home, 'package.json'), 'utf8'));
    expect(Object.keys(pkg.dependencies).sort()).toEqual(['@fastify/swagger-ui', 'better-sqlite3']);

    const ci = spawnSync('npm', ['ci', '--omit=dev', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: home, encoding: 'utf8', timeout: 540_000 });
    expect(ci.status, ci.stderr).toBe(0);

    // The manager from the release, with its default bundle path (the file beside it).
    const m = await startManager({ managerJs: join(home, 'pullman-manager.mjs') });
    expect(await (await fetch(`${m.url}/healthz`)).json()).toEqual({ status: 'ok' });
    const res = await fetch(`${m.url}/v1/worker/bundle`, { headers: { authorization: `Bearer ${m.workerToken}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-pullman-version')).toBe(version);
    expect(Buffer.from(await res.arrayBuffer()).equals(readFileSync(join(home, 'pullman-worker.cjs')))).toBe(true);
    expect((await fetch(`${m.url}/docs/json`)).status).toBe(200);
    const job = await m.api.createJob({ tasks: [{ command: ['true'] }] });
    expect(job.counts.total).toBe(1);
    if (existsSync(join(home, 'pullman.mjs'))) {
      const cli = spawnSync(process.execPath, [join(home, 'pullman.mjs'), '--url', m.url, '--token', m.adminToken, '--json', 'jobs'], { encoding: 'utf8', cwd: home });
      expect(cli.status, cli.stderr).toBe(0);
      expect(JSON.parse(cli.stdout).jobs.map((j: { id: string }) => j.id)).toContain(job.id);
    }
  });
});
