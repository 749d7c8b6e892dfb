/**
 * The dashboard shell: sign-in, the header with live counters, and hash routing between views.
 *   #/              jobs, with the throughput chart
 *   #/jobs/ID?state=S   one job's tasks
 *   #/tasks/ID      one task
 *   #/workers       workers
 */
import type { TaskState, WorkerState } from '@pullman/protocol';
import type { LiveEvent, LiveSummary } from '../live-events.js';
import { ApiError, LiveFeed, get, token, type FeedStatus } from './api.js';
import { ThroughputSeries } from './chart.js';
import { fill, h, int } from './dom.js';
import { isConnectedState } from '../slots.js';
import { JobView, JobsView, TaskView, WorkersView, type View, type ViewContext } from './views.js';

const root = document.getElementById('app')!;
const series = new ThroughputSeries();
let feed: LiveFeed | null = null;
let view: View | null = null;
let summary: LiveSummary | null = null;

const statusEl = h('span', { class: 'feed-status s-connecting', 'data-testid': 'feed-status' }, 'connecting');
const clockEl = h('span', { class: 'muted clock' });
const kpiEl = h('div', { class: 'kpis' });
const main = h('main', { class: 'content' });
const nav = h('nav', { class: 'nav' },
  h('a', { href: '#/', 'data-nav': 'jobs' }, 'Jobs'),
  h('a', { href: '#/workers', 'data-nav': 'workers' }, 'Workers'));

const ctx: ViewContext = {
  series,
  failed(err) {
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) signOut(`The manager no longer accepts this token (${err.message}). Sign in again.`);
  },
};

// ---- sign-in ---------------------------------------------------------------------------------

function showLogin(message?: string): void {
  feed?.stop();
  feed = null;
  view?.dispose?.();
  view = null;
  const input = h('input', { type: 'password', id: 'token', name: 'token', autocomplete: 'off', spellcheck: 'false', placeholder: 'admin token', required: true, 'aria-label': 'Admin token' });
  const error = h('div', { class: 'login-error', role: 'alert', 'data-testid': 'login-error' }, message ?? '');
  if (!message) error.hidden = true;
  const button = h('button', { type: 'submit', class: 'btn primary' }, 'Sign in');
  const form = h('form', { class: 'login card', id: 'login' },
    h('div', { class: 'brand big' }, logo(), 'Pullman'),
    h('p', { class: 'muted' }, 'Enter the manager’s admin token. It is in ', h('code', null, '<data-dir>/admin.token'), ' (', h('code', null, '.pullman/admin.token'), ' by default) and stays in this tab only.'),
    input, button, error);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const value = input.value.trim();
    if (!value) return;
    button.disabled = true;
    button.textContent = 'Checking…';
    get('/v1/jobs?limit=1', value)
      .then(() => {
        token.set(value);
        start();
      })
      .catch((err: unknown) => {
        const e = err as ApiError;
        error.hidden = false;
        error.textContent = e.status === 401 ? `That token was not accepted: ${e.message}.`
          : e.status === 403 ? 'That is not the admin token (the worker token cannot read the API).'
          : `Could not sign in: ${e.message}`;
        button.disabled = false;
        button.textContent = 'Sign in';
        input.select();
      });
  });
  document.body.classList.add('signed-out');
  fill(root, h('div', { class: 'login-wrap' }, form));
  input.focus();
}

function signOut(message?: string): void {
  token.clear();
  showLogin(message);
}

// ---- signed in -------------------------------------------------------------------------------

function start(): void {
  const t = token.get();
  if (!t) return showLogin();
  document.body.classList.remove('signed-out');
  fill(root,
    h('header', { class: 'top' },
      h('a', { class: 'brand', href: '#/' }, logo(), 'Pullman'),
      nav,
      h('div', { class: 'spacer' }),
      statusEl, clockEl,
      h('button', { class: 'btn ghost', onclick: () => signOut() }, 'Sign out')),
    kpiEl,
    main);
  renderKpis();
  feed = new LiveFeed(t, {
    event: onLive,
    status: setStatus,
    unauthorized: (err) => signOut(`The manager refused the live feed: ${err.message}.`),
  });
  feed.start();
  route();
}

function setStatus(s: FeedStatus): void {
  statusEl.className = `feed-status s-${s}`;
  statusEl.textContent = s === 'live' ? 'live' : s;
}

function onLive(e: LiveEvent): void {
  summary = e.data;
  if (e.event === 'hello') series.replace(e.data.throughput);
  else series.add(e.data.throughput);
  clockEl.textContent = new Date(e.data.at).toLocaleTimeString('en-GB', { hour12: false });
  renderKpis();
  view?.live?.(e);
}

function renderKpis(): void {
  const s = summary;
  const kpi = (label: string, value: string, cls = '', sub?: string | Node) =>
    h('div', { class: `kpi ${cls}`, 'data-kpi': label.toLowerCase() }, h('div', { class: 'kpi-k' }, label), h('div', { class: 'kpi-v' }, value), sub ? h('div', { class: 'kpi-sub' }, sub) : null);
  if (!s) {
    fill(kpiEl, h('div', { class: 'kpi muted' }, 'Waiting for the live feed…'));
    return;
  }
  const online = (Object.entries(s.workers) as Array<[WorkerState, number]>).reduce((n, [state, count]) => n + (isConnectedState(state) ? count : 0), 0);
  const slots = s.slots.used + s.slots.free;
  const slotBar = h('div', { class: 'bar bar-xs' }, h('span', { class: 'seg s-running' }));
  (slotBar.firstChild as HTMLElement).style.width = `${slots ? (100 * s.slots.used) / slots : 0}%`;
  fill(kpiEl,
    kpi('Running', int(s.tasks.running), 'k-running'),
    kpi('Queued', int(s.tasks.queued), 'k-queued'),
    kpi('Succeeded', int(s.tasks.succeeded), 'k-succeeded'),
    kpi('Failed', int(s.tasks.failed), 'k-failed', s.tasks.cancelled ? `${int(s.tasks.cancelled)} cancelled` : undefined),
    kpi('Throughput', `${series.rate(10).toFixed(1)}/s`, 'k-rate', 'last 10 s'),
    kpi('Workers', int(online), 'k-workers', `${int(s.workers.busy)} busy${s.workers.unhealthy ? ` · ${int(s.workers.unhealthy)} unhealthy` : ''} · ${int(s.workers.offline)} offline`),
    kpi('Slots', `${int(s.slots.used)} / ${int(slots)}`, 'k-slots', slotBar),
    kpi('Active jobs', int(s.jobs.active), 'k-jobs', `${int(s.jobs.succeeded + s.jobs.failed + s.jobs.cancelled)} finished`));
}

// ---- routing ---------------------------------------------------------------------------------

const TASK_STATES = new Set(['queued', 'running', 'succeeded', 'failed', 'cancelled']);

function route(): void {
  if (!token.get()) return showLogin();
  view?.dispose?.();
  const [path = '/', query = ''] = (location.hash.slice(1) || '/').split('?');
  const params = new URLSearchParams(query);
  let m: RegExpExecArray | null;
  let section = 'jobs';
  if ((m = /^\/jobs\/([^/]+)$/.exec(path))) {
    const state = params.get('state');
    view = new JobView(ctx, decodeURIComponent(m[1]!), state && TASK_STATES.has(state) ? (state as TaskState) : null);
  } else if ((m = /^\/tasks\/([^/]+)$/.exec(path))) {
    view = new TaskView(ctx, decodeURIComponent(m[1]!));
  } else if (path === '/workers') {
    view = new WorkersView(ctx);
    section = 'workers';
  } else {
    view = new JobsView(ctx);
  }
  for (const a of nav.querySelectorAll('a')) a.classList.toggle('active', a.dataset.nav === section);
  fill(main, view.el);
  window.scrollTo(0, 0);
}

function logo(): SVGSVGElement {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('class', 'logo');
  svg.setAttribute('aria-hidden', 'true');
  for (const [x, y, o] of [[3, 3, 1], [13, 3, 0.55], [3, 13, 0.55], [13, 13, 0.3]] as const) {
    const r = document.createElementNS(ns, 'rect');
    r.setAttribute('x', String(x));
    r.setAttribute('y', String(y));
    r.setAttribute('width', '8');
    r.setAttribute('height', '8');
    r.setAttribute('rx', '2');
    r.setAttribute('fill', 'currentColor');
    r.setAttribute('opacity', String(o));
    svg.appendChild(r);
  }
  return svg;
}

window.addEventListener('hashchange', route);
if (token.get()) start();
else showLogin();
