/**
 * Cleaning up after a demo that was killed before it could (SIGKILL, a crash, a reboot of node): its state file lists
 * what it made. Only what it names is touched, and only when it is plainly ours (sl- namespaces, pins under
 * /sys/fs/bpf/sluice/, processes whose command line names the demo's etcd endpoint).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import type { DemoState } from '@sluice/demo-state';
import { removePins } from '@sluice/datapath';

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}

/** Returns what it removed, for one line of output. */
export function cleanupStale(state: DemoState): string[] {
  const removed: string[] = [];
  const endpoint = state.etcd?.endpoints[0];
  // Only folders the demo makes (the lab's, the control-plane host's, etcd's), whatever a tampered state file says.
  const ownDirs = state.tempDirs.filter((dir) => /^\/(tmp|dev\/shm)\/sluice-[^/]+$/.test(dir));
  const pids = [...state.processes, ...(state.etcd?.pid ? [{ name: 'etcd', pid: state.etcd.pid }] : [])];
  for (const { name, pid } of pids) {
    // A pid may have been reused since: only a process that names this demo's etcd (etcd listens on it) or one of
    // its folders (the manifests' containers read their config from there) is one we started.
    const cmd = cmdline(pid);
    if (!cmd || !((endpoint && cmd.includes(endpoint)) || ownDirs.some((dir) => cmd.includes(`${dir}/`)))) continue;
    try {
      process.kill(pid, 'SIGKILL');
      removed.push(`${name} (pid ${pid})`);
    } catch {
      // already gone
    }
  }
  const namespaces = new Set(state.namespaces);
  if (state.namespacePrefix?.startsWith('sl-')) {
    const listed = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    for (const line of listed.split('\n')) {
      const name = line.split(' ')[0] ?? '';
      if (name.startsWith(state.namespacePrefix)) namespaces.add(name);
    }
  }
  for (const ns of namespaces) {
    if (!ns.startsWith('sl-')) continue;
    // Deleting a namespace does not end the processes inside it (the pods' web servers): end them first.
    try {
      const pids = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).split('\n').filter(Boolean).map(Number);
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
          removed.push(`pid ${pid} in ${ns}`);
        } catch {
          // already gone
        }
      }
    } catch {
      // no such namespace
    }
    try {
      execFileSync('ip', ['netns', 'delete', ns], { stdio: 'ignore' });
      removed.push(`netns ${ns}`);
    } catch {
      // already gone
    }
  }
  for (const dir of ownDirs) rmSync(dir, { recursive: true, force: true });
  if (state.pinRoot?.startsWith('/sys/fs/bpf/sluice/')) {
    try {
      removePins(state.pinRoot);
      removed.push(state.pinRoot);
    } catch {
      // already gone
    }
  }
  return removed;
}
