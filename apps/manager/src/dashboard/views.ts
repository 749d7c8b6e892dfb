/**
 * The pages: jobs, one job's tasks, one task, workers. Each view fetches what it shows from the
 * /v1 API and refreshes itself from live events; none reloads the page.
 */
import type { Job, Task, TaskState, Worker } from '@pullman/protocol';
import type { LiveEvent } from '../live-events.js';
import { freeSlots, isConnected, slotCounts } from '../slots.js';
import { get } from './api.js';
import { ThroughputSeries, drawChart } from './chart.js';
import { age, between, duration, fill, h, int, pct, pill, when } from './dom.js';

export interface View {
  readonly el: HTMLElement;
  /** Called for every live event while the view is shown. */
  live?(e: LiveEvent): void;
  dispose?(): void;
}

export interface ViewContext {
  series: ThroughputSeries;
  /** Reports a failed load; auth failures sign the user out. */
  failed(err: unknown): void;
}

const TASK_STATES: TaskState[] = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];
const PAGE = 50;

// ---- shared pieces ---------------------------------------------------------------------------

export function progress(c: Job['counts'], size: 'sm' | 'lg' = 'sm'): HTMLElement {
  const total = Math.max(c.total, 1);
  const seg = (state: string, n: number) => (n > 0 ? h('span', { class: `seg s-${state}`, title: `${int(n)} ${state}` }) : null);
  const bar = h('div', { class: `bar bar-${size}`, role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': c.total, 'aria-valuenow': c.succeeded + c.failed + c.cancelled },
    seg('succeeded', c.succeeded), seg('failed', c.failed), seg('cancelled', c.cancelled), seg('running', c.running));
  // Widths via the CSSOM: the page's CSP allows no inline style attributes.
  const widths: Array<[string, number]> = [['succeeded', c.succeeded], ['failed', c.failed], ['cancelled', c.cancelled], ['running', c.running]];
  let k = 0;
  for (const [, n] of widths) {
    if (n <= 0) continue;
    (bar.children[k++] as HTMLElement).style.width = `${(100 * n) / total}%`;
  }
  return bar;
}

const done = (c: Job['counts']) => c.succeeded + c.failed + c.cancelled;

function errorBox(message: string): HTMLElement {
  return h('div', { class: 'card error-box', role: 'alert' }, h('strong', null, 'Could not load this page. '), message);
}

function kv(label: string, value: string | Node): HTMLElement {
  return h('div', { class: 'kv' }, h('div', { class: 'k' }, label), h('div', { class: 'v' }, value));
}

// ---- jobs ------------------------------------------------------------------------------------

export class JobsView implements View {
  readonly el = h('section', { class: 'view view-jobs' });
  private readonly canvas = h('canvas', { class: 'chart', 'aria-label': 'Tasks finished per second' });
  private readonly chartStats = h('div', { class: 'chart-stats' });
  private readonly tbody = h('tbody');
  private readonly pager = h('div', { class: 'pager' });
  private readonly rows = new Map<string, { tr: HTMLTableRowElement; job: Job }>();
  private cursors: Array<string | undefined> = [undefined];
  private readonly onResize = () => this.redraw();

  constructor(private readonly ctx: ViewContext) {
    fill(this.el,
      h('div', { class: 'card chart-card' },
        h('div', { class: 'card-head' },
          h('h2', null, 'Throughput ', h('span', { class: 'muted' }, 'tasks finished per second, last 10 minutes')),
          h('div', { class: 'legend' }, h('span', { class: 'dot s-succeeded' }), 'succeeded', h('span', { class: 'dot s-failed' }), 'failed')),
        this.chartStats,
        this.canvas),
      h('div', { class: 'card' },
        h('div', { class: 'card-head' }, h('h2', null, 'Jobs')),
        h('table', { class: 'table jobs' },
          h('thead', null, h('tr', null, h('th', null, 'Job'), h('th', null, 'State'), h('th', { class: 'w-progress' }, 'Progress'), h('th', { class: 'num' }, 'Running'), h('th', { class: 'num' }, 'Queued'), h('th', { class: 'num' }, 'Failed'), h('th', null, 'Created'), h('th', { class: 'num' }, 'Elapsed'))),
          this.tbody),
        this.pager));
    window.addEventListener('resize', this.onResize);
    void this.load();
    requestAnimationFrame(() => this.redraw());
  }

  dispose(): void {
    window.removeEventListener('resize', this.onResize);
  }

  live(e: LiveEvent): void {
    this.redraw();
    if (e.event !== 'tick') {
      void this.load();
      return;
    }
    const changed = new Map(e.data.changedJobs.map((j) => [j.id, j]));
    for (const job of e.data.changedJobs) {
      if (this.rows.has(job.id) || this.cursors.length > 1 || !this.isNewer(job.id)) continue;
      const tr = this.row(job);
      this.tbody.prepend(tr);
      this.rows.set(job.id, { tr, job });
      this.tbody.querySelector('.empty')?.remove();
    }
    // Changed jobs get their new counts; active ones are redrawn anyway, for their elapsed time.
    for (const [id, row] of this.rows) {
      const job = changed.get(id) ?? row.job;
      if (job === row.job && job.state !== 'active') continue;
      const tr = this.row(job);
      row.tr.replaceWith(tr);
      this.rows.set(id, { tr, job });
    }
  }

  private isNewer(id: string): boolean {
    const seq = Number(id.split('-')[1]);
    return [...this.rows.keys()].every((k) => Number(k.split('-')[1]) < seq);
  }

  private redraw(): void {
    const s = this.ctx.series;
    const { peak, total } = s.stats();
    fill(this.chartStats,
      h('div', { class: 'stat' }, h('span', { class: 'stat-v', 'data-testid': 'rate-now' }, s.rate(10).toFixed(1)), h('span', { class: 'stat-k' }, 'tasks/s now (10 s mean)')),
      h('div', { class: 'stat' }, h('span', { class: 'stat-v' }, int(peak)), h('span', { class: 'stat-k' }, 'peak tasks/s')),
      h('div', { class: 'stat' }, h('span', { class: 'stat-v' }, int(total)), h('span', { class: 'stat-k' }, 'finished in 10 min')));
    drawChart(this.canvas, s);
  }

  private async load(): Promise<void> {
    const cursor = this.cursors[this.cursors.length - 1];
    try {
      const page = await get<{ jobs: Job[]; nextCursor: string | null }>(`/v1/jobs?limit=${PAGE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      this.rows.clear();
      fill(this.tbody, page.jobs.length ? page.jobs.map((job) => {
        const tr = this.row(job);
        this.rows.set(job.id, { tr, job });
        return tr;
      }) : h('tr', { class: 'empty' }, h('td', { colspan: 8 }, 'No jobs yet. Submit one with ', h('code', null, 'pullman submit tasks.ndjson'), ' or POST /v1/jobs.')));
      fill(this.pager,
        h('button', { class: 'btn', disabled: this.cursors.length === 1, onclick: () => { this.cursors.pop(); void this.load(); } }, '← Newer'),
        h('button', { class: 'btn', disabled: !page.nextCursor, onclick: () => { this.cursors.push(page.nextCursor!); void this.load(); } }, 'Older →'));
    } catch (err) {
      this.ctx.failed(err);
      fill(this.tbody, h('tr', null, h('td', { colspan: 8 }, errorBox((err as Error).message))));
    }
  }

  private row(j: Job): HTMLTableRowElement {
    const c = j.counts;
    return h('tr', { 'data-job': j.id, class: `state-${j.state}` },
      h('td', null, h('a', { href: `#/jobs/${j.id}`, class: 'job-name' }, j.name ?? j.id), h('div', { class: 'sub' }, j.id, j.sealed ? '' : ' · open')),
      h('td', null, pill(j.state)),
      h('td', { class: 'w-progress' }, progress(c), h('div', { class: 'sub progress-text' }, `${int(done(c))} / ${int(c.total)} · `, h('span', { class: 'pct' }, pct(done(c), c.total)))),
      h('td', { class: 'num' }, int(c.running)),
      h('td', { class: 'num' }, int(c.queued)),
      h('td', { class: `num${c.failed ? ' t-failed' : ''}` }, int(c.failed)),
      h('td', null, when(j.createdAt)),
      h('td', { class: 'num' }, duration(between(j.createdAt, j.finishedAt))));
  }
}

// ---- one job ---------------------------------------------------------------------------------

export class JobView implements View {
  readonly el = h('section', { class: 'view view-job' });
  private readonly head = h('div', { class: 'card job-head' });
  private readonly chips = h('div', { class: 'chips', role: 'tablist' });
  private readonly tbody = h('tbody');
  private readonly pager = h('div', { class: 'pager' });
  private cursors: Array<string | undefined> = [undefined];
  private job: Job | null = null;
  private loading = false;

  constructor(
    private readonly ctx: ViewContext,
    private readonly jobId: string,
    private readonly state: TaskState | null,
  ) {
    fill(this.el,
      h('a', { href: '#/', class: 'back' }, '← All jobs'),
      this.head,
      h('div', { class: 'card' },
        this.chips,
        h('table', { class: 'table tasks' },
          h('thead', null, h('tr', null, h('th', null, 'Task'), h('th', null, 'Key'), h('th', null, 'State'), h('th', { class: 'num' }, 'Attempts'), h('th', null, 'Worker'), h('th', null, 'Started'), h('th', { class: 'num' }, 'Duration'), h('th', null, 'Result'))),
          this.tbody),
        this.pager));
    void this.load();
  }

  live(e: LiveEvent): void {
    if (e.event === 'hello') return void this.load();
    const job = e.data.changedJobs.find((j) => j.id === this.jobId);
    if (job) {
      this.renderHead(job);
      void this.load(false);
    }
  }

  private async load(withJob = true): Promise<void> {
    if (this.loading) return;
    this.loading = true;
    const cursor = this.cursors[this.cursors.length - 1];
    try {
      const [job, page] = await Promise.all([
        withJob || !this.job ? get<Job>(`/v1/jobs/${encodeURIComponent(this.jobId)}`) : Promise.resolve(this.job),
        get<{ tasks: Task[]; nextCursor: string | null }>(`/v1/jobs/${encodeURIComponent(this.jobId)}/tasks?limit=${PAGE}${this.state ? `&state=${this.state}` : ''}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`),
      ]);
      this.renderHead(job);
      fill(this.tbody, page.tasks.length ? page.tasks.map((t) => this.row(t)) : h('tr', { class: 'empty' }, h('td', { colspan: 8 }, this.state ? `No ${this.state} tasks.` : 'This job has no tasks yet.')));
      const first = (this.cursors.length - 1) * PAGE;
      const total = this.state ? job.counts[this.state] : job.counts.total;
      fill(this.pager,
        h('span', { class: 'muted' }, page.tasks.length ? `${int(first + 1)}–${int(first + page.tasks.length)} of ${int(total)}` : ''),
        h('button', { class: 'btn', disabled: this.cursors.length === 1, onclick: () => { this.cursors.pop(); void this.load(false); } }, '← Previous'),
        h('button', { class: 'btn', disabled: !page.nextCursor, onclick: () => { this.cursors.push(page.nextCursor!); void this.load(false); } }, 'Next →'));
    } catch (err) {
      this.ctx.failed(err);
      fill(this.head, errorBox((err as Error).message));
    } finally {
      this.loading = false;
    }
  }

  private renderHead(job: Job): void {
    this.job = job;
    const c = job.counts;
    fill(this.head,
      h('div', { class: 'job-title' }, h('h1', null, job.name ?? job.id), pill(job.state), h('span', { class: 'muted' }, job.id)),
      h('div', { class: 'job-progress' }, progress(c, 'lg'), h('div', { class: 'big-pct', 'data-testid': 'job-pct' }, pct(done(c), c.total))),
      h('div', { class: 'kvs' },
        kv('Tasks', int(c.total)),
        kv('Created', when(job.createdAt)),
        job.finishedAt ? kv('Finished', when(job.finishedAt)) : null,
        kv(job.finishedAt ? 'Took' : 'Elapsed', duration(between(job.createdAt, job.finishedAt))),
        kv('Sealed', job.sealed ? 'yes' : 'no (open for more tasks)')));
    const chip = (state: TaskState | null, n: number) =>
      h('a', { class: `chip${state === this.state ? ' active' : ''}${state ? ` c-${state}` : ''}`, role: 'tab', 'data-state': state ?? 'all', href: `#/jobs/${job.id}${state ? `?state=${state}` : ''}` },
        state ? h('span', { class: `dot s-${state}` }) : null, state ?? 'all', h('span', { class: 'chip-n' }, int(n)));
    fill(this.chips, chip(null, c.total), TASK_STATES.map((s) => chip(s, c[s])));
  }

  private row(t: Task): HTMLTableRowElement {
    const r = t.result;
    const result = r === null ? '—' : r.error ? `${r.error.code}${r.exitCode !== null ? ` (exit ${r.exitCode})` : ''}` : `exit ${r.exitCode ?? '—'}`;
    return h('tr', { 'data-task': t.id },
      h('td', null, h('a', { href: `#/tasks/${t.id}` }, t.id)),
      h('td', { class: 'mono ellipsis', title: t.key ?? '' }, t.key ?? '—'),
      h('td', null, pill(t.state)),
      h('td', { class: 'num' }, int(t.attempts)),
      h('td', { class: 'mono' }, t.workerId ?? '—'),
      h('td', null, when(t.startedAt)),
      h('td', { class: 'num' }, r ? duration(r.durationMs) : t.state === 'running' ? duration(between(t.startedAt, null)) : '—'),
      h('td', { class: r?.error ? 't-failed' : 'muted' }, result));
  }
}

// ---- one task --------------------------------------------------------------------------------

export class TaskView implements View {
  readonly el = h('section', { class: 'view view-task' });
  private task: Task | null = null;

  constructor(
    private readonly ctx: ViewContext,
    private readonly taskId: string,
  ) {
    void this.load();
  }

  live(e: LiveEvent): void {
    if (!this.task || this.task.state === 'queued' || this.task.state === 'running') {
      if (e.event === 'hello' || e.data.changedJobs.some((j) => j.id === this.task?.jobId)) void this.load();
    }
  }

  private async load(): Promise<void> {
    try {
      this.render(await get<Task>(`/v1/tasks/${encodeURIComponent(this.taskId)}`));
    } catch (err) {
      this.ctx.failed(err);
      fill(this.el, h('a', { href: '#/', class: 'back' }, '← All jobs'), errorBox((err as Error).message));
    }
  }

  private render(t: Task): void {
    this.task = t;
    const r = t.result;
    const pre = (cls: string, text: string | null | undefined, empty: string) =>
      text ? h('pre', { class: `tail ${cls}` }, text) : h('div', { class: 'muted empty-tail' }, empty);
    fill(this.el,
      h('a', { href: `#/jobs/${t.jobId}`, class: 'back' }, `← ${t.jobId}`),
      h('div', { class: 'card' },
        h('div', { class: 'job-title' }, h('h1', null, t.key ?? t.id), pill(t.state), h('span', { class: 'muted' }, t.id)),
        r?.error ? h('div', { class: 'error-line' }, h('strong', null, r.error.code), ' ', r.error.message) : null,
        h('div', { class: 'kvs' },
          kv('Job', h('a', { href: `#/jobs/${t.jobId}` }, t.jobId)),
          kv('Attempts', int(t.attempts)),
          kv('Worker', t.workerId ?? '—'),
          kv('Created', when(t.createdAt)),
          kv('Started', when(t.startedAt)),
          kv('Finished', when(t.finishedAt)),
          kv('Duration', r ? duration(r.durationMs) : duration(between(t.startedAt, t.finishedAt))),
          kv('Exit code', r?.exitCode === null || r?.exitCode === undefined ? '—' : String(r.exitCode)),
          kv('Signal', r?.signal ?? '—'),
          kv('Priority · slots', `${t.priority} · ${t.slots}`))),
      h('div', { class: 'grid-2' },
        h('div', { class: 'card' }, h('h2', null, 'stderr ', h('span', { class: 'muted' }, '(last 64 KiB)')), pre('stderr', r?.stderrTail, r ? 'Nothing on stderr.' : 'No result yet.')),
        h('div', { class: 'card' }, h('h2', null, 'stdout ', h('span', { class: 'muted' }, '(last 64 KiB)')), pre('stdout', r?.stdoutTail, r ? 'Nothing on stdout.' : 'No result yet.'))),
      h('div', { class: 'grid-2' },
        h('div', { class: 'card' }, h('h2', null, 'Output ', h('span', { class: 'muted' }, '($PULLMAN_OUTPUT)')), r?.output !== null && r?.output !== undefined ? h('pre', { class: 'json' }, JSON.stringify(r.output, null, 2)) : h('div', { class: 'muted empty-tail' }, 'No output.')),
        h('div', { class: 'card' }, h('h2', null, 'Spec'), h('pre', { class: 'json' }, JSON.stringify(t.spec, null, 2)))),
      h('div', { class: 'card' },
        h('h2', null, 'Attempts'),
        h('table', { class: 'table attempts' },
          h('thead', null, h('tr', null, h('th', { class: 'num' }, '#'), h('th', null, 'Outcome'), h('th', null, 'Worker'), h('th', null, 'Started'), h('th', null, 'Ended'), h('th', { class: 'num' }, 'Took'), h('th', { class: 'num' }, 'Exit'), h('th', null, 'Error'))),
          h('tbody', null, (t.history ?? []).length ? (t.history ?? []).map((a) =>
            h('tr', null,
              h('td', { class: 'num' }, String(a.attempt)),
              h('td', null, pill(a.outcome)),
              h('td', { class: 'mono' }, a.workerId ?? '—'),
              h('td', null, when(a.startedAt)),
              h('td', null, when(a.endedAt)),
              h('td', { class: 'num' }, duration(between(a.startedAt, a.endedAt))),
              h('td', { class: 'num' }, a.exitCode === null ? '—' : String(a.exitCode)),
              h('td', { class: a.error ? 't-failed' : 'muted' }, a.error ? `${a.error.code}: ${a.error.message}` : '—'))) : h('tr', { class: 'empty' }, h('td', { colspan: 8 }, 'Not started yet.'))))));
  }
}

// ---- workers ---------------------------------------------------------------------------------

export class WorkersView implements View {
  readonly el = h('section', { class: 'view view-workers' });
  private readonly map = h('div', { class: 'slot-map' });
  private readonly mapHead = h('div', { class: 'card-head' });
  private readonly tbody = h('tbody');
  private workers: Worker[] = [];
  private loading = false;

  constructor(private readonly ctx: ViewContext) {
    fill(this.el,
      h('div', { class: 'card' }, this.mapHead, this.map),
      h('div', { class: 'card' },
        h('div', { class: 'card-head' }, h('h2', null, 'Workers')),
        h('table', { class: 'table workers' },
          h('thead', null, h('tr', null, h('th', null, 'Worker'), h('th', null, 'State'), h('th', null, 'Scale set / instance'), h('th', null, 'Size'), h('th', null, 'Zone'), h('th', null, 'Provisioning'), h('th', { class: 'w-slots' }, 'Slots used / free'), h('th', null, 'Heartbeat'), h('th', { class: 'num' }, 'Done'), h('th', { class: 'num' }, 'Failed'))),
          this.tbody)));
    void this.load();
  }

  live(): void {
    void this.load();
  }

  private async load(): Promise<void> {
    if (this.loading) return;
    this.loading = true;
    try {
      this.workers = (await get<{ workers: Worker[] }>('/v1/workers')).workers;
      this.render();
    } catch (err) {
      this.ctx.failed(err);
      fill(this.tbody, h('tr', null, h('td', { colspan: 10 }, errorBox((err as Error).message))));
    } finally {
      this.loading = false;
    }
  }

  private render(): void {
    const now = Date.now();
    // Connected workers first (busiest first), then offline, then gone.
    const rank = (w: Worker) => (isConnected(w) ? 0 : w.state === 'offline' ? 1 : 2);
    const sorted = [...this.workers].sort((a, b) => rank(a) - rank(b) || b.usedSlots / b.slots - a.usedSlots / a.slots || a.name.localeCompare(b.name));
    const live = sorted.filter(isConnected);
    const { used, free } = slotCounts(live);
    const total = used + free;
    fill(this.mapHead,
      h('h2', null, 'Slot map ', h('span', { class: 'muted' }, 'one tile per worker, filled by its used slots')),
      h('div', { class: 'legend' }, `${int(live.length)} connected · ${int(used)} of ${int(total)} slots busy (${pct(used, total)})`));
    fill(this.map, sorted.filter((w) => w.state !== 'gone').map((w) => {
      const tile = h('div', { class: `tile t-${w.state}`, title: `${w.name}: ${w.usedSlots}/${w.slots} slots, ${w.state}${w.problem ? ` (${w.problem})` : ''}` }, h('span', { class: 'tile-fill' }));
      (tile.firstChild as HTMLElement).style.height = `${isConnected(w) ? (100 * w.usedSlots) / Math.max(1, w.slots) : 0}%`;
      return tile;
    }));
    fill(this.tbody, sorted.length ? sorted.map((w) => this.row(w, now)) : h('tr', { class: 'empty' }, h('td', { colspan: 10 }, 'No worker has connected yet.')));
  }

  private row(w: Worker, now: number): HTMLTableRowElement {
    const vm = w.vm;
    const free = freeSlots(w);
    const slotBar = h('div', { class: 'bar bar-sm' }, h('span', { class: 'seg s-running' }));
    (slotBar.firstChild as HTMLElement).style.width = `${(100 * w.usedSlots) / Math.max(1, w.slots)}%`;
    const beat = w.lastHeartbeatAt ? now - Date.parse(w.lastHeartbeatAt) : null;
    return h('tr', { 'data-worker': w.id, class: `state-${w.state}` },
      h('td', null, h('div', { class: 'worker-name' }, w.name), h('div', { class: 'sub mono' }, w.id, w.labels.length ? ` · ${w.labels.join(', ')}` : '')),
      h('td', null, pill(w.state), w.problem ? h('div', { class: 'sub t-failed worker-problem' }, w.problem) : null),
      h('td', null, vm ? `${vm.scaleSet ?? '—'}${vm.instanceId !== null ? ` / ${vm.instanceId}` : ''}` : h('span', { class: 'muted' }, 'not on Azure'), vm?.priority === 'Spot' ? h('span', { class: 'tag' }, 'spot') : null),
      h('td', null, vm?.vmSize ?? '—'),
      h('td', null, vm ? `${vm.location}${vm.zone ? `-${vm.zone}` : ''}` : '—'),
      h('td', null, vm?.provisioningState ? h('span', { class: `prov p-${vm.provisioningState.toLowerCase()}` }, vm.provisioningState) : '—'),
      h('td', { class: 'w-slots' }, slotBar, h('div', { class: 'sub slots-text' }, `${w.usedSlots} used · ${free} free`)),
      h('td', { class: beat !== null && beat > 15_000 && isConnected(w) ? 't-failed' : '' }, age(w.lastHeartbeatAt, now)),
      h('td', { class: 'num' }, int(w.tasksSucceeded)),
      h('td', { class: `num${w.tasksFailed ? ' t-failed' : ''}` }, int(w.tasksFailed)));
  }
}
