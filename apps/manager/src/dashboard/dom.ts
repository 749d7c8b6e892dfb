/**
 * A tiny DOM builder and the formatters every view shares. Text always goes in as text nodes,
 * never as HTML: task keys, stderr and worker names are user data.
 */

type Child = Node | string | number | null | undefined | false | Child[];
type Props = Record<string, string | number | boolean | null | undefined | EventListener>;

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, props?: Props | null, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props ?? {})) {
    if (v === null || v === undefined || v === false) continue;
    if (typeof v === 'function') el.addEventListener(k.slice(2).toLowerCase(), v);
    else if (k === 'class') el.className = String(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el: Node, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
  }
}

/** Replaces all children of `el`. */
export function fill(el: Element, ...children: Child[]): void {
  el.replaceChildren();
  append(el, children);
}

const intFormat = new Intl.NumberFormat('en-US');
export const int = (n: number): string => intFormat.format(n);

export function pct(part: number, total: number): string {
  if (total === 0) return '0%';
  const p = (100 * part) / total;
  // Never round up to 100% before the last task is done, nor down to 0% after the first.
  if (p > 99 && part < total) return `${Math.min(99.9, Math.floor(p * 10) / 10)}%`;
  if (p > 0 && p < 1) return `${Math.max(0.1, Math.floor(p * 10) / 10)}%`;
  return `${Math.floor(p)}%`;
}

/** 850ms, 12.3s, 4m 05s, 2h 03m. */
export function duration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '—';
  if (ms < 1_000) return `${Math.round(ms)}ms`;
  const s = ms / 1_000;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(Math.floor(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, '0')}m`;
}

/** "4s ago", "3m ago"; "—" for null. */
export function age(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return '—';
  const ms = Math.max(0, now - Date.parse(iso));
  if (ms < 1_000) return 'just now';
  if (ms < 60_000) return `${Math.floor(ms / 1_000)}s ago`;
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)}m ago`;
  if (ms < 86_400_000) return `${Math.floor(ms / 3_600_000)}h ago`;
  return `${Math.floor(ms / 86_400_000)}d ago`;
}

/** Local wall-clock time, with the date when it is not today. */
export function when(iso: string | null | undefined): string {
  if (!iso) return '—';
  const d = new Date(iso);
  const time = d.toLocaleTimeString('en-GB', { hour12: false });
  return d.toDateString() === new Date().toDateString() ? time : `${d.toISOString().slice(0, 10)} ${time}`;
}

export function between(from: string | null | undefined, to: string | null | undefined, now = Date.now()): number | null {
  if (!from) return null;
  return (to ? Date.parse(to) : now) - Date.parse(from);
}

export const pill = (state: string): HTMLElement => h('span', { class: `pill s-${state}` }, state);
