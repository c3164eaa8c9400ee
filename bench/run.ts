/**
 * `npm run bench [-- <suite>…]`: runs benchmark suites and writes each one's figures to bench/results/<suite>.json.
 * A suite is a file `<package>/bench/<suite>.bench.ts` whose default export returns its figures.
 */
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { basename, join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export interface Figure {
  metric: string;
  value: number;
  unit: string;
}
export type Suite = () => Promise<Figure[]>;

const root = fileURLToPath(new URL('..', import.meta.url));

async function findSuites(): Promise<Map<string, string>> {
  const suites = new Map<string, string>();
  for (const group of ['libs', 'services', 'test']) {
    for (const pkg of await readdir(join(root, group)).catch(() => [])) {
      const dir = join(root, group, pkg, 'bench');
      for (const file of await readdir(dir).catch(() => [])) {
        if (file.endsWith('.bench.ts')) suites.set(basename(file, '.bench.ts'), join(dir, file));
      }
    }
  }
  return suites;
}

const suites = await findSuites();
const wanted = process.argv.slice(2).filter((a) => a !== '--');
if (wanted.includes('--help') || wanted.includes('-h')) {
  process.stdout.write(`usage: npm run bench [-- <suite>…]\nsuites: ${[...suites.keys()].sort().join(', ')}\n`);
  process.exit(0);
}
const unknown = wanted.filter((w) => !suites.has(w));
if (unknown.length) {
  process.stderr.write(`bench: unknown suite ${unknown.join(', ')} (known: ${[...suites.keys()].sort().join(', ')})\n`);
  process.exit(2);
}
await mkdir(join(root, 'bench/results'), { recursive: true });
for (const name of wanted.length ? wanted : [...suites.keys()].sort()) {
  const file = suites.get(name)!;
  process.stdout.write(`\n== ${name} (${relative(root, file)})\n`);
  const suite = (await import(pathToFileURL(file).href)).default as Suite;
  const figures = await suite();
  for (const f of figures) process.stdout.write(`  ${f.metric.padEnd(52)} ${formatValue(f.value).padStart(14)} ${f.unit}\n`);
  const out = join(root, 'bench/results', `${name}.json`);
  await writeFile(out, `${JSON.stringify(figures, null, 2)}\n`);
  process.stdout.write(`  → ${relative(root, out)}\n`);
}

function formatValue(value: number): string {
  return Number.isInteger(value) ? value.toLocaleString('en-US') : value.toLocaleString('en-US', { maximumFractionDigits: 3 });
}
