import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Io } from '../src/cli.ts';
import type { ProbeRunner } from '../src/connectivity.ts';

export interface Captured {
  io: Io;
  out: () => string;
  err: () => string;
}

/** An Io that captures output, with no demo state file to be found unless `statePath` names one. */
export function capture(options: { statePath?: string; probeRunner?: ProbeRunner } = {}): Captured {
  let out = '';
  let err = '';
  const dir = mkdtempSync(join(tmpdir(), 'sluice-cli-test-'));
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
