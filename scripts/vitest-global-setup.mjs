import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** Vitest's global setup for every package: the compiled services are current before any test runs one. */
export default function setup() {
  execFileSync(process.execPath, [fileURLToPath(new URL('./build-services.mjs', import.meta.url))], { stdio: 'inherit' });
}
