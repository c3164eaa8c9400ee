import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import type { Io } from '../src/cli.ts';
import type { ProbeRunner } from '../src/connectivity.ts';

const made: string[] = [];
// Registered on the importing file's suite (each test file gets its own module): its folders go when it ends.
afterAll(() => {
  for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A new folder under the system's temporary one, removed when the test file ends. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}

export interface Captured {
  io: Io;
  out: () => string;
  err: () => string;
}

/** An Io that captures output, with no demo state file to be found unless `statePath` names one. */
export function capture(options: { statePath?: string; probeRunner?: ProbeRunner } = {}): Captured {
  let out = '';
  let err = '';
  const dir = tempDir('sluice-cli-test-');
  return {
    io: {
      stdout: (t) => (out += t),
      stderr: (t) => (err += t),
      env: { SLUICE_DEMO_STATE: options.statePath ?? join(dir, 'demo.json') },
      cwd: dir,
      probeRunner: options.probeRunner,
    },
    out: () => out,
    err: () => err,
  };
}

/** A pid that certainly belongs to no process: one that just exited. */
export function deadPid(): number {
  return spawnSync('true').pid!;
}
