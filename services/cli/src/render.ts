/** Text rendering: the `cilium status` screen and plain column tables. */
import { SECTION_LABELS, type Section, type StatusReport } from './status.ts';

const LABEL_WIDTH = 25;

/** Sections whose line carries the state word (the others read like cilium's "Host Routing:  BPF"). */
const WITH_STATE = new Set(['kvstore', 'kubernetes', 'operator', 'agents']);

export function renderStatus(report: StatusReport, options: { verbose?: boolean } = {}): string {
  const lines: string[] = [];
  if (report.node) lines.push(`Node:`.padEnd(LABEL_WIDTH) + report.node);
  for (const [key, label] of Object.entries(SECTION_LABELS) as Array<[keyof typeof SECTION_LABELS, string]>) {
    const section: Section = report[key];
    const showState = WITH_STATE.has(key) || section.state === 'Error';
    lines.push(`${label}:`.padEnd(LABEL_WIDTH) + (showState ? `${section.state.padEnd(7)}   ${section.summary}` : section.summary));
    if (options.verbose) lines.push(...detailLines(section.data));
  }
  return `${lines.join('\n')}\n`;
}

/** A section's details, one `key: value` line each, under its line (--verbose). */
function detailLines(data: Record<string, unknown> | undefined): string[] {
  if (!data) return [];
  return Object.entries(data).map(([key, value]) => {
    const text = typeof value === 'string' ? value : JSON.stringify(value);
    return `  ${key}:`.padEnd(LABEL_WIDTH) + (text.length > 240 ? `${text.slice(0, 240)}…` : text);
  });
}

/** `sluice status --brief`: "OK", or one line per section in error. */
export function renderBrief(report: StatusReport): string {
  const errors = (Object.entries(SECTION_LABELS) as Array<[keyof typeof SECTION_LABELS, string]>).filter(([key]) => report[key].state === 'Error');
  if (!errors.length) return 'OK\n';
  return errors.map(([key, label]) => `${label}: ${report[key].summary}\n`).join('');
}

/** Columns padded to the widest cell; the last column is not padded. */
export function renderTable(header: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('   ')
      .trimEnd();
  return `${[line(header), ...rows.map(line)].join('\n')}\n`;
}
