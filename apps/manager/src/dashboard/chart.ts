/**
 * The live throughput chart: tasks finished per second, succeeded and failed stacked, drawn on a
 * canvas. No chart library: one stacked area over at most 600 points is a few dozen lines.
 *
 * The x axis spans the ten-minute window once there is that much history; before that it
 * spans from the first finished task (at least a minute), so a fresh run is not a sliver at
 * the right edge.
 */
import type { ThroughputPoint } from '../live-events.js';

export const WINDOW_SECONDS = 600;

const COLORS = { succeeded: '#3fb950', failed: '#f85149', grid: 'rgba(139,148,158,0.16)', text: '#8b949e' };

export class ThroughputSeries {
  private readonly points = new Map<number, ThroughputPoint>();
  /** The latest complete second the manager told us about. */
  last = 0;

  replace(points: readonly ThroughputPoint[]): void {
    this.points.clear();
    this.last = 0;
    this.add(points);
  }

  add(points: readonly ThroughputPoint[]): void {
    for (const p of points) {
      this.points.set(p.t, p);
      if (p.t > this.last) this.last = p.t;
    }
    for (const t of this.points.keys()) if (t <= this.last - WINDOW_SECONDS) this.points.delete(t);
  }

  /** Seconds from `from` to `last`, zeros filled in. */
  range(from: number): ThroughputPoint[] {
    const out: ThroughputPoint[] = [];
    for (let t = from; t <= this.last; t++) out.push(this.points.get(t) ?? { t, succeeded: 0, failed: 0 });
    return out;
  }

  /** Mean tasks/s over the last `seconds`. */
  rate(seconds: number): number {
    let n = 0;
    for (const p of this.range(this.last - seconds + 1)) n += p.succeeded + p.failed;
    return n / seconds;
  }

  stats(): { total: number; peak: number; firstActive: number | null } {
    let total = 0;
    let peak = 0;
    let firstActive: number | null = null;
    for (const p of [...this.points.values()].sort((a, b) => a.t - b.t)) {
      const n = p.succeeded + p.failed;
      total += n;
      peak = Math.max(peak, n);
      if (n > 0 && firstActive === null) firstActive = p.t;
    }
    return { total, peak, firstActive };
  }
}

function niceCeil(v: number): number {
  if (v <= 5) return 5;
  const mag = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= v) return m * mag;
  return 10 * mag;
}

export function drawChart(canvas: HTMLCanvasElement, series: ThroughputSeries): void {
  const dpr = window.devicePixelRatio || 1;
  const cssW = canvas.clientWidth || 800;
  const cssH = canvas.clientHeight || 180;
  if (canvas.width !== Math.round(cssW * dpr) || canvas.height !== Math.round(cssH * dpr)) {
    canvas.width = Math.round(cssW * dpr);
    canvas.height = Math.round(cssH * dpr);
  }
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssW, cssH);

  const { firstActive } = series.stats();
  const sinceFirst = firstActive === null ? 60 : series.last - firstActive + 10;
  const span = Math.min(WINDOW_SECONDS, Math.max(60, Math.ceil(sinceFirst / 60) * 60));
  const points = series.range(series.last - span + 1);
  const max = niceCeil(Math.max(1, ...points.map((p) => p.succeeded + p.failed)) * 1.1);

  const left = 44;
  const right = 8;
  const top = 8;
  const bottom = 22;
  const w = cssW - left - right;
  const hgt = cssH - top - bottom;
  const x = (i: number) => left + (points.length <= 1 ? w : (i / (points.length - 1)) * w);
  const y = (v: number) => top + hgt - (v / max) * hgt;

  ctx.font = '11px ui-sans-serif, system-ui, sans-serif';
  ctx.fillStyle = COLORS.text;
  ctx.strokeStyle = COLORS.grid;
  ctx.lineWidth = 1;
  ctx.textBaseline = 'middle';
  ctx.textAlign = 'right';
  for (let k = 0; k <= 4; k++) {
    const v = (max * k) / 4;
    const yy = Math.round(y(v)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(left, yy);
    ctx.lineTo(left + w, yy);
    ctx.stroke();
    ctx.fillText(Number.isInteger(v) ? String(v) : v.toFixed(1), left - 6, yy);
  }
  ctx.textBaseline = 'top';
  ctx.textAlign = 'center';
  const step = span <= 60 ? 15 : span <= 180 ? 30 : span <= 300 ? 60 : 120;
  for (let ago = 0; ago < span; ago += step) {
    const i = points.length - 1 - ago;
    if (i < 0) break;
    const label = ago === 0 ? 'now' : ago % 60 === 0 ? `−${ago / 60}m` : ago < 60 ? `−${ago}s` : `−${Math.floor(ago / 60)}m${ago % 60}s`;
    ctx.fillText(label, Math.min(Math.max(x(i), left + 10), left + w - 12), top + hgt + 6);
  }

  const area = (lower: (p: ThroughputPoint) => number, upper: (p: ThroughputPoint) => number, color: string, stroke: boolean) => {
    if (points.length === 0) return;
    ctx.beginPath();
    points.forEach((p, i) => (i === 0 ? ctx.moveTo(x(i), y(upper(p))) : ctx.lineTo(x(i), y(upper(p)))));
    for (let i = points.length - 1; i >= 0; i--) ctx.lineTo(x(i), y(lower(points[i]!)));
    ctx.closePath();
    const grad = ctx.createLinearGradient(0, top, 0, top + hgt);
    grad.addColorStop(0, `${color}cc`);
    grad.addColorStop(1, `${color}33`);
    ctx.fillStyle = grad;
    ctx.fill();
    if (!stroke) return;
    ctx.beginPath();
    points.forEach((p, i) => (i === 0 ? ctx.moveTo(x(i), y(upper(p))) : ctx.lineTo(x(i), y(upper(p)))));
    ctx.strokeStyle = color;
    ctx.lineWidth = 1.5;
    ctx.stroke();
  };
  // Failures stack on top of successes; only the success line is stroked, so a run without
  // failures shows no red at all.
  if (points.some((p) => p.failed > 0)) area((p) => p.succeeded, (p) => p.succeeded + p.failed, COLORS.failed, false);
  area(() => 0, (p) => p.succeeded, COLORS.succeeded, true);
}
