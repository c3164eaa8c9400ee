/**
 * Prometheus text exposition and PromQL, as far as the dashboard and alert tests need: the metric families a
 * component exports, and the metric names an expression reads.
 */
import { spawnSync } from 'node:child_process';

/** Family name → type, from the `# TYPE` lines. */
export function families(exposition: string): Map<string, string> {
  return new Map([...exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
}

/** Every series name a scrape of these families yields (a histogram's _bucket, _sum, _count; a summary's too). */
export function seriesNames(fams: Map<string, string>): Set<string> {
  const out = new Set<string>();
  for (const [name, type] of fams) {
    out.add(name);
    if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) out.add(name + s);
    if (type === 'summary') for (const s of ['_sum', '_count']) out.add(name + s);
  }
  return out;
}

const PROMQL_WORDS = new Set([
  'sum', 'min', 'max', 'avg', 'count', 'rate', 'irate', 'increase', 'delta', 'histogram_quantile', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right',
  'and', 'or', 'unless', 'bool', 'offset', 'absent', 'absent_over_time', 'time', 'clamp_min', 'clamp_max', 'topk', 'bottomk', 'label_replace', 'vector', 'scalar',
  'max_over_time', 'min_over_time', 'avg_over_time', 'changes', 'resets', 'le', 'quantile', 'count_values', 'stddev', 'round', 'ceil', 'floor', 'abs', 'sort', 'sort_desc',
]);

/** The metric names a PromQL expression selects (identifiers outside label matchers, strings and ranges). */
export function metricsIn(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, '')
    .replace(/\[[^\]]*\]/g, '')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '')
    // Grafana's variables ($__rate_interval, $node).
    .replace(/\$\w+/g, '');
  const names = [...stripped.matchAll(/\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()/g)].map((m) => m[1]!).filter((n) => !PROMQL_WORDS.has(n) && !/^\d/.test(n));
  return [...new Set(names)];
}

/** `promtool check metrics` on an exposition: its complaints (none when it passes). */
export function promtoolCheckMetrics(exposition: string): { code: number; output: string } {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: exposition, encoding: 'utf8' });
  if (r.error) throw r.error;
  return { code: r.status ?? 1, output: `${r.stdout}${r.stderr}`.trim() };
}
