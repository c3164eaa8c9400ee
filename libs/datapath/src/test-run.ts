/** BPF_PROG_TEST_RUN: runs a tc program on a packet in the kernel, without any device, for benchmarks and tests. */
import koffi from 'koffi';
import { BpfTestRunOpts, bpf, check } from './libbpf.ts';

export interface TestRunResult {
  /** The program's return code (TC_ACT_OK = 0, TC_ACT_SHOT = 2, TC_ACT_REDIRECT = 7). */
  retval: number;
  /** Average nanoseconds per run, measured by the kernel. */
  durationNs: number;
  /** The packet as the program left it. */
  dataOut: Buffer;
}

const optsSize = koffi.sizeof(BpfTestRunOpts);

export function testRun(progFd: number, packet: Buffer, repeat = 1): TestRunResult {
  const out = Buffer.alloc(packet.length + 256);
  const opts = {
    sz: optsSize,
    data_in: packet,
    data_out: out,
    data_size_in: packet.length,
    data_size_out: out.length,
    ctx_in: null,
    ctx_out: null,
    ctx_size_in: 0,
    ctx_size_out: 0,
    retval: 0,
    repeat,
    duration: 0,
    flags: 0,
    cpu: 0,
    batch_size: 0,
  };
  check('bpf_prog_test_run_opts', bpf.progTestRun(progFd, opts));
  return { retval: opts.retval, durationNs: opts.duration, dataOut: out.subarray(0, opts.data_size_out) };
}

export const TC_ACT_OK = 0;
export const TC_ACT_SHOT = 2;
export const TC_ACT_REDIRECT = 7;

/** An Ethernet + IPv4 + UDP frame (checksums not needed by the programs). */
export function ipv4Frame(src: string, dst: string, payload = 18): Buffer {
  const buf = Buffer.alloc(14 + 20 + 8 + payload);
  buf.writeUInt16BE(0x0800, 12);
  buf[14] = 0x45;
  buf.writeUInt16BE(20 + 8 + payload, 16);
  buf[22] = 64;
  buf[23] = 17;
  const put = (ip: string, off: number) => ip.split('.').forEach((o, i) => (buf[off + i] = Number(o)));
  put(src, 26);
  put(dst, 30);
  buf.writeUInt16BE(12345, 34);
  buf.writeUInt16BE(80, 36);
  buf.writeUInt16BE(8 + payload, 38);
  return buf;
}

/** Ethernet + IPv4 + TCP (a SYN unless `tcpFlags` says otherwise) or UDP with 4 payload bytes; checksums left 0. */
export function l4Frame(proto: 'tcp' | 'udp', src: string, sport: number, dst: string, dport: number, tcpFlags = 0x02): Buffer {
  const l4 = proto === 'tcp' ? 20 : 8;
  const buf = Buffer.alloc(14 + 20 + l4 + 4);
  buf.writeUInt16BE(0x0800, 12);
  buf[14] = 0x45;
  buf.writeUInt16BE(20 + l4 + 4, 16);
  buf[22] = 64;
  buf[23] = proto === 'tcp' ? 6 : 17;
  const put = (ip: string, off: number) => ip.split('.').forEach((o, i) => (buf[off + i] = Number(o)));
  put(src, 26);
  put(dst, 30);
  buf.writeUInt16BE(sport, 34);
  buf.writeUInt16BE(dport, 36);
  if (proto === 'tcp') {
    buf.writeUInt32BE(1000, 38);
    buf[46] = 5 << 4;
    buf[47] = tcpFlags;
  } else buf.writeUInt16BE(8 + 4, 38);
  return buf;
}
