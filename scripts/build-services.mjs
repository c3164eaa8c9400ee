#!/usr/bin/env node
/**
 * Compiles each long-running service (what deploy/ runs) into one JavaScript file, services/<name>/dist/main.mjs,
 * from its TypeScript and the workspace libraries it imports; npm packages stay imports of node_modules.
 *
 * Why not `node --import tsx` in production: the loader runs a second V8 isolate for its hooks and keeps every
 * module's transform in memory, and its transform names every function at run time. At 5,000 nodes / 100,000 pods
 * the operator's peak RSS was 338 MiB through tsx and 270 MiB from its build, its CPU for the sync 37 → 32 s and
 * for a minute of churn 10.3 → 8.7 s; each agent and health replica saves the same ~70 MiB. The source maps are
 * written beside the bundles but not loaded (`--enable-source-maps` holds every package's maps: ~15 MiB).
 *
 * The sources find files next to themselves (their package.json for --version, proto/, bpf/build) through
 * import.meta.url, which in a bundle would name the bundle: each workspace module's import.meta.url is rewritten to
 * its own source file's URL, relative to the bundle, so the bundle works wherever the checkout is, as the sources do.
 *
 * Run by scripts/bootstrap.sh and before each package's tests (vitest's global setup: a test that runs a service as
 * deploy/ does never runs a stale build); rebuilds only when a source the last build read is newer than its output.
 *   node scripts/build-services.mjs [--force]
 */
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SERVICES = ['operator', 'agent', 'health'];
const force = process.argv.includes('--force');

/** Whether every input the last build of `service` read is older than its output. */
function upToDate(service) {
  const out = join(ROOT, 'services', service, 'dist', 'main.mjs');
  const meta = join(ROOT, 'services', service, 'dist', 'inputs.json');
  if (!existsSync(out) || !existsSync(meta)) return false;
  const built = statSync(out).mtimeMs;
  const inputs = JSON.parse(readFileSync(meta, 'utf8'));
  return inputs.every((file) => existsSync(join(ROOT, file)) && statSync(join(ROOT, file)).mtimeMs <= built);
}

/** Bundles workspace code only, each module keeping its own import.meta.url (see above). */
const workspaceOnly = (outDir) => ({
  name: 'workspace-only',
  setup(b) {
    // npm packages (anything bare but @sluice/*) are loaded from node_modules at run time, as with the sources.
    b.onResolve({ filter: /^[^./]/ }, (args) => (args.path.startsWith('@sluice/') ? undefined : { path: args.path, external: true }));
    b.onLoad({ filter: /\.ts$/ }, async (args) => {
      const source = await readFile(args.path, 'utf8');
      const own = JSON.stringify(relative(outDir, args.path));
      return { contents: source.replaceAll('import.meta.url', `new URL(${own}, import.meta.url).href`), loader: 'ts' };
    });
  },
});

for (const service of SERVICES) {
  if (!force && upToDate(service)) continue;
  const dist = join(ROOT, 'services', service, 'dist');
  const result = await build({
    entryPoints: [join(ROOT, 'services', service, 'src', 'main.ts')],
    outfile: join(dist, 'main.mjs'),
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    sourcemap: true,
    metafile: true,
    logLevel: 'warning',
    plugins: [workspaceOnly(dist)],
    // Written below, each file replaced whole: a process starting from the bundle meanwhile never reads half of one.
    write: false,
  });
  mkdirSync(dist, { recursive: true });
  for (const file of result.outputFiles) {
    // Its own temporary name: two test runs may build at once.
    const temporary = `${file.path}.${process.pid}.tmp`;
    writeFileSync(temporary, file.contents);
    renameSync(temporary, file.path);
  }
  const inputs = Object.keys(result.metafile.inputs).map((file) => relative(ROOT, resolve(process.cwd(), file)));
  writeFileSync(join(dist, 'inputs.json'), `${JSON.stringify(inputs)}\n`);
}
