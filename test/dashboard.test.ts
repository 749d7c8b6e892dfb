/**
 * The web dashboard in a real browser (Debian's chromium driven by playwright-core) against a
 * real manager and real workers, three of them on fake Azure VMs so the workers page has VM facts.
 *
 * Saves screenshots to a temp dir; with PULLMAN_UPDATE_SCREENSHOT=1 it also writes them to
 * docs/images/ (CI never does, so CI never modifies the repository).
 */
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type Page } from 'playwright-core';
import { FakeAzure, UNIFORM_VM } from './fakes/fake-azure.js';
import { finished, killAll, startManager, startWorker, tempDir, until } from './harness.js';

const CHROMIUM = '/usr/bin/chromium';
const LAUNCH_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const DOCS_IMAGES = fileURLToPath(new URL('../docs/images/', import.meta.url));

const fakes: FakeAzure[] = [];
let browser: Browser | null = null;
afterAll(async () => {
  await browser?.close();
  await killAll();
  for (const f of fakes) await f.stop();
});

async function shoot(page: Page, name: string): Promise<string> {
  const path = join(tempDir('shots'), name);
  await page.screenshot({ path, fullPage: true });
  if (process.env.PULLMAN_UPDATE_SCREENSHOT === '1') {
    mkdirSync(DOCS_IMAGES, { recursive: true });
    copyFileSync(path, join(DOCS_IMAGES, name));
  }
  return path;
}

describe('dashboard', () => {
  it('signs in, follows a job live to 100%, shows a failed task’s stderr and the workers’ slots', async () => {
    expect(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium`).toBe(true);
    const m = await startManager();

    // Three workers on (fake) Azure VMs of one scale set, and one plain box: 12 slots.
    for (let i = 0; i < 3; i++) {
      const azure = await FakeAzure.start({ ...UNIFORM_VM, name: `pull_${i}`, uniform: { scaleSet: 'pull', instanceId: String(i) }, zone: String(i + 1), priority: i === 2 ? 'Spot' : 'Regular' });
      fakes.push(azure);
      startWorker(m, { name: 'ignored-on-azure', slots: 3, env: { ...azure.env(), PULLMAN_READY: 'azure', PULLMAN_READY_INTERVAL: '200ms', PULLMAN_NAME: '' } });
    }
    startWorker(m, { name: 'lab-workstation', slots: 3 });
    await until('four workers', async () => ((await m.api.workers()).filter((w) => w.state === 'ready').length === 4 ? true : undefined));

    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: LAUNCH_ARGS });
    const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
    const consoleErrors: string[] = [];
    page.on('pageerror', (err) => consoleErrors.push(err.message));
    await page.goto(m.url);

    // A wrong token: an error under the form, never a blank page.
    await page.fill('#token', 'not-the-admin-token-0000');
    await page.click('#login button[type=submit]');
    const error = page.getByTestId('login-error');
    await error.waitFor({ state: 'visible' });
    expect(await error.textContent()).toContain('not accepted');
    expect(await page.isVisible('#token')).toBe(true);
    // The worker token is not enough either.
    await page.fill('#token', m.workerToken);
    await page.click('#login button[type=submit]');
    await page.waitForFunction(() => document.querySelector('[data-testid=login-error]')?.textContent?.includes('not the admin token'));

    // The right one: kept in sessionStorage, and the live feed connects.
    await page.fill('#token', m.adminToken);
    await page.click('#login button[type=submit]');
    await page.getByTestId('feed-status').filter({ hasText: 'live' }).waitFor();
    expect(await page.evaluate(() => sessionStorage.getItem('pullman.adminToken'))).toBe(m.adminToken);
    // A marker that a reload would wipe, and a record of every progress value the row shows.
    await page.evaluate(() => {
      const w = window as unknown as { __noReload: boolean; __seen: string[] };
      w.__noReload = true;
      w.__seen = [];
      new MutationObserver(() => {
        const pct = document.querySelector('tr[data-job="job-1"] .pct')?.textContent;
        if (pct && w.__seen[w.__seen.length - 1] !== pct) w.__seen.push(pct);
      }).observe(document.body, { subtree: true, childList: true, characterData: true });
    });

    // The job is created after the page loaded: it appears and progresses by live updates only.
    const sweep = await m.api.createJob({
      name: 'monte-carlo-sweep',
      tasks: Array.from({ length: 400 }, (_, i) => ({
        key: `seed-${i}`,
        shell: i % 40 === 13
          ? `echo "seed ${i}: solver diverged at step 412 (residual 3.1e+07)" >&2; exit 3`
          : `sleep 0.${(i * 7) % 4 + 1}; echo "{\\"seed\\": ${i}, \\"estimate\\": 3.14$((${i} % 97))}" > "$PULLMAN_OUTPUT"`,
      })),
    });
    expect(sweep.id).toBe('job-1');
    await page.locator('tr[data-job="job-1"] .pct', { hasText: '100%' }).waitFor({ timeout: 120_000 });
    const done = await finished(m.api, sweep.id);
    expect(done.counts).toMatchObject({ succeeded: 390, failed: 10 });
    const seen = await page.evaluate(() => (window as unknown as { __seen: string[] }).__seen);
    expect(seen[seen.length - 1]).toBe('100%');
    expect(seen.length).toBeGreaterThan(1); // it moved while we watched
    expect(await page.evaluate(() => (window as unknown as { __noReload?: boolean }).__noReload)).toBe(true);

    // The job page, filtered to failed tasks, then one failed task and its stderr tail.
    await page.click('tr[data-job="job-1"] a.job-name');
    await page.getByTestId('job-pct').filter({ hasText: '100%' }).waitFor();
    await page.click('.chips [data-state="failed"]');
    await page.waitForFunction(() => location.hash.endsWith('?state=failed'));
    const failedRows = page.locator('tr[data-task]');
    await failedRows.first().waitFor();
    await page.waitForFunction(() => document.querySelectorAll('tr[data-task]').length === 10);
    for (const state of await page.locator('tr[data-task] .pill').allTextContents()) expect(state).toBe('failed');
    await failedRows.first().locator('a').click();
    const stderr = page.locator('pre.stderr');
    await stderr.waitFor();
    expect(await stderr.textContent()).toMatch(/seed \d+: solver diverged at step 412/);
    expect(await page.locator('.attempts tbody tr').count()).toBe(1);

    // Keep every slot busy, with more work queued behind, and look at the workers.
    await m.api.createJob({ name: 'render-frames', tasks: Array.from({ length: 12 }, (_, i) => ({ key: `frame-${i}`, shell: 'sleep 300' })) });
    await m.api.createJob({ name: 'genome-align', tasks: Array.from({ length: 48 }, (_, i) => ({ key: `chr-${i}`, shell: 'sleep 1' })) });
    await page.click('nav a[data-nav="workers"]');
    await page.waitForFunction(() => {
      const slots = [...document.querySelectorAll('tr[data-worker] .slots-text')].map((e) => e.textContent);
      return slots.length === 4 && slots.every((s) => s === '3 used · 0 free');
    }, undefined, { timeout: 60_000 });
    const rows = await page.locator('tr[data-worker]').allTextContents();
    expect(rows.filter((r) => r.includes('pull / ') && r.includes('Standard_D4s_v5') && r.includes('Succeeded'))).toHaveLength(3);
    expect(rows.some((r) => r.includes('lab-workstation') && r.includes('not on Azure'))).toBe(true);
    expect(await page.locator('.slot-map .tile').count()).toBe(4);
    await page.waitForFunction(() => document.querySelector('[data-kpi="slots"] .kpi-v')?.textContent === '12 / 12');
    await shoot(page, 'dashboard-workers.png');

    // The overview, with the throughput chart, for the docs.
    await page.click('nav a[data-nav="jobs"]');
    await page.locator('tr[data-job="job-3"]').waitFor();
    await page.waitForFunction(() => document.querySelector('[data-kpi="slots"] .kpi-v')?.textContent === '12 / 12');
    const shot = await shoot(page, 'dashboard.png');
    expect(existsSync(shot)).toBe(true);

    // A fifth worker whose work dir cannot hold a task (scratch is a file): it gives back the
    // task it is sent and shows as unhealthy, with the reason; its slots are not counted free.
    const brokenDir = tempDir('wrk-broken');
    writeFileSync(join(brokenDir, 'scratch'), '');
    startWorker(m, { name: 'full-disk', slots: 3, workDir: brokenDir });
    await page.click('nav a[data-nav="workers"]');
    const broken = page.locator('tr[data-worker]', { hasText: 'full-disk' });
    await broken.locator('.pill', { hasText: 'unhealthy' }).waitFor({ timeout: 60_000 });
    expect(await broken.locator('.worker-problem').textContent()).toContain(`cannot prepare the task's files under ${brokenDir}`);
    expect(await page.locator('.slot-map .tile.t-unhealthy').count()).toBe(1);
    await page.waitForFunction(() => document.querySelector('[data-kpi="workers"] .kpi-sub')?.textContent?.includes('1 unhealthy'));
    expect(await page.locator('[data-kpi="slots"] .kpi-v').textContent()).toBe('12 / 12');
    await page.waitForFunction(() => document.querySelector('.view-workers .legend')?.textContent?.startsWith('5 connected · 12 of 12 slots busy'));

    expect(consoleErrors).toEqual([]);
    // The token travelled in headers only: no URL the manager logged carries it.
    expect(JSON.stringify(m.logs)).not.toContain(m.adminToken);
  });
});
