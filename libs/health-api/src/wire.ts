/**
 * A hand-written decoder for ReportProbesRequest, installed by the health service as the method's request
 * deserializer. At 5,000 nodes the service takes ~75,000 probe results a second; the generic path (protobufjs decode
 * into a message, toObject with string enums, then zod over every result) built three objects per result and cost
 * most of the service's CPU. This one reads the bytes once, checks the same rules as `reportProbesRequestSchema`
 * while it reads, and builds one small object per result. It never throws: a bad message comes back as a
 * HealthApiError (the service answers INVALID_ARGUMENT with its text; grpc-js would turn a throwing deserializer into
 * INTERNAL).
 */
import { HealthApiError, MAX_RESULTS_PER_REPORT, NODE_NAME_PATTERN, PROBE_KINDS, nodeName, type ProbeKind } from './types.ts';

/** What the service takes from one result. The probed address is checked but not kept: the node list has the IPs. */
export interface ReportedProbe {
  target: string;
  kind: ProbeKind;
  ok: boolean;
  rttUs: number;
  error: string;
  timeUnixMs: number;
}

export interface ReportBatch {
  reporter: string;
  results: ReportedProbe[];
}

const WHAT = 'ReportProbesRequest';
// The same limits as probeResultSchema, in characters.
const MAX_TARGET = 253;
const MAX_IP = 64;
const MAX_ERROR = 512;
const TWO_POW_63 = 2 ** 63;

class Malformed extends Error {}

/** A cursor over one message's bytes. Varints are read as JS numbers (exact below 2^53; the checks reject more). */
class Reader {
  pos: number;
  constructor(readonly buf: Buffer, start: number, readonly end: number) {
    this.pos = start;
  }

  varint(): number {
    const { buf, end } = this;
    let b = this.pos < end ? buf[this.pos++]! : -1;
    if (b < 0) throw new Malformed('truncated varint');
    if (b < 128) return b;
    let value = b & 127;
    let scale = 128;
    for (let i = 1; i < 10; i++) {
      if (this.pos >= end) throw new Malformed('truncated varint');
      b = buf[this.pos++]!;
      value += (b & 127) * scale;
      if (b < 128) return value;
      scale *= 128;
    }
    throw new Malformed('varint longer than 10 bytes');
  }

  /** The end of a length-delimited field that starts here. */
  delimited(): number {
    const length = this.varint();
    const stop = this.pos + length;
    if (stop > this.end) throw new Malformed('length past the end of the message');
    return stop;
  }

  skip(wireType: number): void {
    switch (wireType) {
      case 0:
        this.varint();
        return;
      case 1:
        this.pos += 8;
        break;
      case 2:
        this.pos = this.delimited();
        return;
      case 5:
        this.pos += 4;
        break;
      default:
        throw new Malformed(`unsupported wire type ${wireType}`);
    }
    if (this.pos > this.end) throw new Malformed('truncated field');
  }

  string(stop: number): string {
    const { buf } = this;
    const start = this.pos;
    this.pos = stop;
    // Names and addresses are short ASCII: building them from char codes beats a call into the UTF-8 decoder.
    if (stop - start <= 32) {
      let s = '';
      for (let i = start; i < stop; i++) {
        const c = buf[i]!;
        if (c >= 128) return buf.toString('utf8', start, stop);
        s += String.fromCharCode(c);
      }
      return s;
    }
    return buf.toString('utf8', start, stop);
  }
}

const fail = (field: string, message: string) => new HealthApiError(`bad ${WHAT}: ${field} ${message}`, field);

/** The int64/uint64 value of a varint as a non-negative safe integer, or an error message. */
function int64Problem(value: number): string | undefined {
  if (value >= TWO_POW_63) return 'must be at least 0';
  if (value > Number.MAX_SAFE_INTEGER) return 'is too large';
  return undefined;
}

// A function declaration, not a closure per result: tsx's keep-names wrapper makes closures costly in this loop.
function at(index: number, field: string): string {
  return `results.${index}.${field}`;
}

function decodeResult(r: Reader, stop: number, index: number): ReportedProbe | HealthApiError {
  let target = '';
  let kind = 0;
  let ipLength = 0;
  let ok = false;
  let rttUs = 0;
  let error = '';
  let timeUnixMs = 0;
  while (r.pos < stop) {
    const tag = r.varint();
    const field = Math.floor(tag / 8);
    const wireType = tag & 7;
    if (field === 1 && wireType === 2) {
      target = r.string(r.delimited());
    } else if (field === 2 && wireType === 0) {
      kind = r.varint();
    } else if (field === 3 && wireType === 2) {
      const end = r.delimited();
      // Characters, as zod counts them: bytes are an upper bound, exact for ASCII.
      ipLength = end - r.pos > MAX_IP ? r.string(end).length : end - r.pos;
      r.pos = end;
    } else if (field === 4 && wireType === 0) {
      ok = r.varint() !== 0;
    } else if (field === 5 && wireType === 0) {
      rttUs = r.varint();
      const problem = int64Problem(rttUs);
      if (problem) return fail(at(index, 'rttUs'), problem);
    } else if (field === 6 && wireType === 2) {
      error = r.string(r.delimited());
    } else if (field === 7 && wireType === 0) {
      timeUnixMs = r.varint();
      const problem = int64Problem(timeUnixMs);
      if (problem) return fail(at(index, 'timeUnixMs'), problem);
    } else {
      r.skip(wireType);
    }
  }
  if (r.pos !== stop) throw new Malformed('a result runs past its length');
  if (target.length === 0) return fail(at(index, 'target'), 'must not be empty');
  if (target.length > MAX_TARGET) return fail(at(index, 'target'), `must be at most ${MAX_TARGET} characters`);
  const kindName = kind >= 1 && kind <= PROBE_KINDS.length ? PROBE_KINDS[kind - 1]! : undefined;
  if (!kindName) return fail(at(index, 'kind'), `must be one of ${PROBE_KINDS.join(', ')} (got ${kind})`);
  if (ipLength > MAX_IP) return fail(at(index, 'ip'), `must be at most ${MAX_IP} characters`);
  if (error.length > MAX_ERROR) return fail(at(index, 'error'), `must be at most ${MAX_ERROR} characters`);
  if (timeUnixMs <= 0) return fail(at(index, 'timeUnixMs'), 'must be a positive time');
  return { target, kind: kindName, ok, rttUs, error, timeUnixMs };
}

/** Decodes and validates one ReportProbesRequest; a HealthApiError names the first bad field. */
export function decodeReportProbesRequest(buf: Buffer): ReportBatch | HealthApiError {
  try {
    const r = new Reader(buf, 0, buf.length);
    let reporter = '';
    const results: ReportedProbe[] = [];
    let count = 0;
    // The reporter is checked first whatever its place on the wire, so the error names the same field as the schema's.
    let badResult: HealthApiError | undefined;
    while (r.pos < r.end) {
      const tag = r.varint();
      const field = Math.floor(tag / 8);
      const wireType = tag & 7;
      if (field === 1 && wireType === 2) {
        reporter = r.string(r.delimited());
      } else if (field === 2 && wireType === 2) {
        const stop = r.delimited();
        if (badResult) {
          r.pos = stop;
          continue;
        }
        const result = decodeResult(r, stop, count++);
        if (result instanceof HealthApiError) badResult = result;
        else results.push(result);
      } else {
        r.skip(wireType);
      }
    }
    if (!nodeNameOk(reporter)) {
      const problem = nodeName.safeParse(reporter);
      return fail('reporter', problem.success ? 'is not a valid node name' : problem.error.issues[0]!.message);
    }
    if (count > MAX_RESULTS_PER_REPORT) return fail('results', `must have at most ${MAX_RESULTS_PER_REPORT} entries`);
    return badResult ?? { reporter, results };
  } catch (err) {
    if (err instanceof Malformed) return new HealthApiError(`bad ${WHAT}: not a valid protobuf message (${err.message})`, '(message)');
    throw err;
  }
}

function nodeNameOk(name: string): boolean {
  return name.length >= 1 && name.length <= 253 && NODE_NAME_PATTERN.test(name);
}

/*
 * The other direction, for senders that produce reports in bulk (the scale harness's 5,000 simulated probers in one
 * process): protobufjs's fromObject + encode cost that process more than the service spends reading the same bytes.
 * Input must already be valid (see reportProbesRequestSchema); the output is plain proto3, defaults omitted.
 */
let out = Buffer.allocUnsafe(16 * 1024);
let outAt = 0;

function reserve(extra: number): void {
  if (outAt + extra <= out.length) return;
  const bigger = Buffer.allocUnsafe(Math.max(out.length * 2, outAt + extra));
  out.copy(bigger, 0, 0, outAt);
  out = bigger;
}

function putVarint(value: number): void {
  reserve(10);
  let v = value;
  while (v > 127) {
    out[outAt++] = (v % 128) | 128;
    v = Math.floor(v / 128);
  }
  out[outAt++] = v;
}

function putString(field: number, value: string): void {
  if (value.length === 0) return;
  putVarint(field * 8 + 2);
  if (value.length < 128) {
    reserve(value.length + 1);
    let ascii = true;
    for (let i = 0; i < value.length && ascii; i++) {
      const c = value.charCodeAt(i);
      if (c > 127) ascii = false;
      else out[outAt + 1 + i] = c;
    }
    if (ascii) {
      out[outAt] = value.length;
      outAt += 1 + value.length;
      return;
    }
  }
  const length = Buffer.byteLength(value, 'utf8');
  putVarint(length);
  reserve(length);
  outAt += out.write(value, outAt, 'utf8');
}

function putUint(field: number, value: number): void {
  if (value === 0) return;
  putVarint(field * 8);
  putVarint(value);
}

const KIND_NUMBER = new Map<string, number>(PROBE_KINDS.map((kind, i) => [kind, i + 1]));

/** The wire bytes of a (valid) ReportProbesRequest. */
export function encodeReportProbesRequest(request: { reporter: string; results: readonly (ReportedProbe & { ip: string })[] }): Buffer {
  outAt = 0;
  putString(1, request.reporter);
  for (const r of request.results) {
    putVarint(2 * 8 + 2);
    reserve(1);
    const lengthAt = outAt++;
    putString(1, r.target);
    putUint(2, KIND_NUMBER.get(r.kind) ?? 0);
    putString(3, r.ip);
    putUint(4, r.ok ? 1 : 0);
    putUint(5, r.rttUs);
    putString(6, r.error);
    putUint(7, r.timeUnixMs);
    const length = outAt - lengthAt - 1;
    if (length < 128) {
      out[lengthAt] = length;
    } else {
      // Rare (a long error text): move the body to make room for a longer length.
      let extra = 0;
      for (let v = length; v > 127; v = Math.floor(v / 128)) extra++;
      reserve(extra);
      out.copyWithin(lengthAt + 1 + extra, lengthAt + 1, outAt);
      const end = outAt + extra;
      outAt = lengthAt;
      putVarint(length);
      outAt = end;
    }
  }
  return Buffer.from(out.subarray(0, outAt));
}
