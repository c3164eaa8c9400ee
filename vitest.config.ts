import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const root = fileURLToPath(new URL('.', import.meta.url));
const packageName = basename(process.cwd());

// Shared by every package (each one's vitest.config.ts re-exports it); each run also writes a JSON report that
// scripts/test-summary.mjs adds up into the suite's closing line.
export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 120_000,
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    // Builds what changed of the compiled services (scripts/build-services.mjs) that tests run as deploy/ does.
    globalSetup: [`${root}scripts/vitest-global-setup.mjs`],
    reporters: ['default', ['json', { outputFile: `${root}test-results/${packageName}.json` }]],
  },
});
