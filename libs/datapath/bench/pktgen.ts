/**
 * The xdp bench's packet generator (xdp-pktgen.bpf.c): builds and loads its object, runs it with
 * BPF_PROG_TEST_RUN + BPF_F_TEST_XDP_LIVE_FRAMES (frames really transmitted through a veth's ndo_xdp_xmit, in
 * batches, from the calling thread), and reads its counters.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import koffi from 'koffi';
import { possibleCpus } from '../src/bpf-map.ts';
import { bpf, BpfError, check, checkPtr, lastErrno, type TestRunOpts } from '../src/libbpf.ts';

const SOURCE = fileURLToPath(new URL('./xdp-pktgen.bpf.c', import.meta.url));
export const BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1;
const HDR_LEN = 14 + 20 + 20;
const CFG_SIZE = 16 + HDR_LEN + 2;
export const CNT = { sent: 0, forwarded: 1, other: 2 } as const;


export interface Pktgen {
  programs: { pktgen: number; sink: number; reflect: number; tcReflect: number };
  /** The frame the generator writes (flow 0: its TCP source port is the first of `flows`). */
  configure(frame: Buffer, flows: number, expect: { saddr: string; dnet: string; dprefix: number }): void;
  counters(): Record<keyof typeof CNT, number>;
  resetCounters(): void;
  close(): void;
}

const ipBytes = (ip: string) => Buffer.from(ip.split('.').map(Number));

export function loadPktgen(): Pktgen {
  const dir = mkdtempSync(join(tmpdir(), 'sl-pktgen-'));
  try {
    const arch = process.arch === 'x64' ? 'x86' : process.arch === 'arm64' ? 'arm64' : process.arch;
    const multiarch = execFileSync('clang', ['-print-multiarch'], { encoding: 'utf8' }).trim() || `${process.arch}-linux-gnu`;
    const object = join(dir, 'xdp-pktgen.bpf.o');
    execFileSync('clang', ['-O2', '-g', '-Wall', '-Werror', '-target', 'bpf', `-D__TARGET_ARCH_${arch}`, `-I/usr/include/${multiarch}`, '-c', SOURCE, '-o', object]);
    const obj = checkPtr('bpf_object__open_file', bpf.objectOpenFile(object, null), object);
    check('bpf_object__load', bpf.objectLoad(obj), object);
    const prog = (name: string) => bpf.programFd(checkPtr('bpf_object__find_program_by_name', bpf.findProgram(obj, name), name));
    const map = (name: string) => bpf.mapFd(checkPtr('bpf_object__find_map_by_name', bpf.findMap(obj, name), name));
    const cfgFd = map('pktgen_cfg');
    const cntFd = map('pktgen_cnt');
    const cpus = possibleCpus();
    const key = (i: number) => Buffer.from(new Uint32Array([i]).buffer);
    return {
      programs: { pktgen: prog('pktgen'), sink: prog('pktgen_sink'), reflect: prog('pktgen_reflect'), tcReflect: prog('pktgen_tc_reflect') },
      configure(frame, flows, expect) {
        const v = Buffer.alloc(CFG_SIZE);
        ipBytes(expect.saddr).copy(v, 0);
        Buffer.from(new Uint32Array([expect.dprefix ? (0xffffffff << (32 - expect.dprefix)) >>> 0 : 0]).buffer).swap32().copy(v, 4);
        ipBytes(expect.dnet).copy(v, 8);
        v.writeUInt16LE(flows, 12);
        frame.copy(v, 16, 0, HDR_LEN);
        check('bpf_map_update_elem', bpf.mapUpdateElem(cfgFd, key(0), v, 0), 'pktgen_cfg');
      },
      counters() {
        const out = { sent: 0, forwarded: 0, other: 0 };
        const v = Buffer.alloc(8 * cpus);
        for (const [name, i] of Object.entries(CNT) as Array<[keyof typeof CNT, number]>) {
          check('bpf_map_lookup_elem', bpf.mapLookupElem(cntFd, key(i), v), 'pktgen_cnt');
          for (let c = 0; c < cpus; c++) out[name] += Number(v.readBigUInt64LE(c * 8));
        }
        return out;
      },
      resetCounters() {
        const zero = Buffer.alloc(8 * cpus);
        for (const i of Object.values(CNT)) check('bpf_map_update_elem', bpf.mapUpdateElem(cntFd, key(i), zero, 0), 'pktgen_cnt');
      },
      close: () => bpf.objectClose(obj),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Transmits `repeat` copies of `frame` through device `ifindex` (in the calling thread's namespace) with the
 * generator program, `batch` frames per ndo_xdp_xmit. Returns the kernel's nanoseconds per frame: its timer runs
 * with bottom halves enabled between batches, so the softirq work the frames cause on this CPU (the peer's NAPI,
 * the node under test, the way back) is inside it, and time the thread spent preempted is not.
 */
export function transmit(progFd: number, frame: Buffer, ifindex: number, repeat: number, batch = 64): number {
  const ctx = Buffer.alloc(24); // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
  ctx.writeUInt32LE(frame.length, 4);
  ctx.writeUInt32LE(ifindex, 12);
  const opts: TestRunOpts = {
    sz: koffi.sizeof('bpf_test_run_opts'),
    data_in: frame,
    data_out: null,
    data_size_in: frame.length,
    data_size_out: 0,
    ctx_in: ctx,
    ctx_out: null,
    ctx_size_in: ctx.length,
    ctx_size_out: 0,
    retval: 0,
    repeat,
    duration: 0,
    flags: BPF_F_TEST_XDP_LIVE_FRAMES,
    cpu: 0,
    batch_size: batch,
  };
  check('bpf_prog_test_run_opts', bpf.progTestRun(progFd, opts), 'live frames');
  return opts.duration;
}

const libc = koffi.load('libc.so.6');
const sched = {
  getcpu: libc.func('int sched_getcpu(void)') as () => number,
  getaffinity: libc.func('int sched_getaffinity(int pid, size_t size, void *mask)') as (pid: number, size: number, mask: Buffer) => number,
  setaffinity: libc.func('int sched_setaffinity(int pid, size_t size, const void *mask)') as (pid: number, size: number, mask: Buffer) => number,
};

/**
 * Runs `fn` with the calling thread pinned to the CPU it is on, so that every run of a measurement sends from, and
 * has its veth NAPIs scheduled on, the same CPU (a generator that moved could find the peer's NAPI still owned by
 * the CPU it left, where the work would escape the timer). Restores the thread's affinity afterwards.
 */
export function onOneCpu<T>(fn: () => T): T {
  const saved = Buffer.alloc(128);
  if (sched.getaffinity(0, saved.length, saved) < 0) throw new BpfError('sched_getaffinity', lastErrno());
  const cpu = sched.getcpu();
  const mask = Buffer.alloc(128);
  mask.writeUInt8(1 << (cpu & 7), cpu >> 3);
  if (sched.setaffinity(0, mask.length, mask) < 0) throw new BpfError('sched_setaffinity', lastErrno(), `cpu ${cpu}`);
  try {
    return fn();
  } finally {
    sched.setaffinity(0, saved.length, saved);
  }
}
