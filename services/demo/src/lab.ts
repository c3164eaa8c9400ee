/**
 * The demo's lab part: nodes in network namespaces, each with a real agent and eBPF datapath, and pods running a
 * small web server. Built on @sluice/lab; until that exists the demo runs without a lab and says why.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { DemoNode, DemoPod } from '@sluice/demo-state';
import type { KubeSim } from '@sluice/kube-sim';
import { REPO_ROOT } from './paths.ts';

export interface LabPart {
  nodes: DemoNode[];
  pods: DemoPod[];
  namespaces: string[];
  pinRoot: string;
  processes: Array<{ name: string; pid: number }>;
  stop(): Promise<void>;
}

export interface LabPartOptions {
  nodes: number;
  podsPerNode: number;
  etcdEndpoint: string;
  sim: KubeSim;
  logDir: string;
  timeoutMs: number;
  onProgress(line: { what: string; detail: string }): void;
  /** Called as soon as namespaces or pins exist, so that a crash right after still leaves a record of them. */
  onCreated(made: { namespaces: string[]; pinRoot: string }): Promise<void>;
}

export async function startLabPart(_options: LabPartOptions): Promise<LabPart | { error: string }> {
  if (process.getuid?.() !== 0) return { error: 'the lab needs root (network namespaces, eBPF)' };
  if (!existsSync(join(REPO_ROOT, 'test/lab/src/index.ts'))) return { error: 'the lab (test/lab, @sluice/lab) is not built yet' };
  return { error: 'the lab integration is not wired yet' };
}
