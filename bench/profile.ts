/**
 * Summarises V8 CPU profiles (`--cpu-prof` output, as written by `npm run bench -- --profile`):
 * the top functions by self time, with their share of all samples.
 *
 *   npx tsx bench/profile.ts DIR_OR_FILE [--top N]
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples?: number[];
  timeDeltas?: number[];
  startTime: number;
  endTime: number;
}

export function topSelf(profile: Profile, top = 15): Array<{ fn: string; where: string; ms: number; share: number }> {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  // Self time from samples and their time deltas (more exact than hitCount x interval).
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  for (let i = 0; i < samples.length; i++) self.set(samples[i]!, (self.get(samples[i]!) ?? 0) + (deltas[i + 1] ?? deltas[i] ?? 0));
  const agg = new Map<string, { fn: string; where: string; us: number }>();
  let total = 0;
  for (const [id, us] of self) {
    const n = byId.get(id)!;
    const fn = n.callFrame.functionName || '(anonymous)';
    const url = n.callFrame.url.replace(/^file:\/\//, '');
    const where = url ? `${url.replace(/^.*node_modules\//, '~/').replace(/^.*\/work\/main\//, '')}:${n.callFrame.lineNumber + 1}` : '';
    const key = `${fn}@${where}`;
    const a = agg.get(key) ?? { fn, where, us: 0 };
    a.us += us;
    agg.set(key, a);
    total += us;
  }
  return [...agg.values()].sort((a, b) => b.us - a.us).slice(0, top).map((a) => ({ fn: a.fn, where: a.where, ms: a.us / 1000, share: a.us / total }));
}

function files(path: string): string[] {
  if (statSync(path).isFile()) return [path];
  return readdirSync(path, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.cpuprofile')).map((f) => join(path, f)).sort();
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) {
  const args = process.argv.slice(2);
  const topIdx = args.indexOf('--top');
  const top = topIdx >= 0 ? Number(args.splice(topIdx, 2)[1]) : 15;
  if (args.length !== 1) {
    process.stderr.write('usage: tsx bench/profile.ts DIR_OR_FILE [--top N]\n');
    process.exit(2);
  }
  for (const f of files(args[0]!)) {
    const p = JSON.parse(readFileSync(f, 'utf8')) as Profile;
    process.stdout.write(`\n## ${relative(process.cwd(), f)} (${((p.endTime - p.startTime) / 1e6).toFixed(1)} s)\n\n| self ms | share | function | where |\n|---:|---:|---|---|\n`);
    for (const r of topSelf(p, top)) process.stdout.write(`| ${r.ms.toFixed(0)} | ${(r.share * 100).toFixed(1)}% | ${r.fn} | ${r.where} |\n`);
  }
}
