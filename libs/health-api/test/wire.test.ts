import { describe, expect, it } from 'vitest';
import {
  HealthApiError,
  clusterHealthService,
  decodeReportProbesRequest,
  encodeReportProbesRequest,
  parseMessage,
  reportProbesRequestSchema,
  type ProbeResult,
  type ReportProbesRequest,
} from '../src/index.ts';

const method = clusterHealthService.ReportProbes!;
const encode = (request: unknown) => method.requestSerialize(request);
const genericDecode = (bytes: Buffer) => parseMessage(reportProbesRequestSchema, method.requestDeserialize(bytes), 'ReportProbesRequest');

const result = (over: Partial<ProbeResult> = {}): ProbeResult => ({
  target: 'node-2',
  kind: 'PROBE_KIND_HOST_ICMP',
  ip: '10.0.0.2',
  ok: true,
  rttUs: 250,
  error: '',
  timeUnixMs: 1_800_000_000_123,
  ...over,
});

const withoutIp = (r: ReportProbesRequest) => ({ reporter: r.reporter, results: r.results.map(({ ip: _ip, ...rest }) => rest) });

function expectError(bytes: Buffer, field: string): HealthApiError {
  const decoded = decodeReportProbesRequest(bytes);
  expect(decoded).toBeInstanceOf(HealthApiError);
  const error = decoded as HealthApiError;
  expect(error.field).toBe(field);
  expect(error.message).toMatch(/^bad ReportProbesRequest: /);
  return error;
}

describe('decodeReportProbesRequest', () => {
  it('reads what the generic decoder and the schema read (the address checked, not kept)', () => {
    const request: ReportProbesRequest = {
      reporter: 'node-1.example',
      results: [
        result(),
        result({ kind: 'PROBE_KIND_HOST_HTTP', ok: false, rttUs: 0, error: 'Connection refused' }),
        result({ target: 'node-3', kind: 'PROBE_KIND_ENDPOINT_ICMP', rttUs: 2 ** 40 + 7, ip: 'fd00::1' }),
        result({ target: 'n'.repeat(253), kind: 'PROBE_KIND_ENDPOINT_HTTP', ok: false, error: 'délai dépassé ⏱ '.repeat(20) }),
      ],
    };
    const bytes = encode(request);
    expect(decodeReportProbesRequest(bytes)).toEqual(withoutIp(genericDecode(bytes)));
    expect(decodeReportProbesRequest(bytes)).toEqual(withoutIp(request));
  });

  it('takes an empty batch and skips fields it does not know', () => {
    expect(decodeReportProbesRequest(encode({ reporter: 'node-1', results: [] }))).toEqual({ reporter: 'node-1', results: [] });
    // Field 15 (varint) and field 9 (length-delimited) inside a result, field 8 (fixed64) at the top.
    const inner = Buffer.concat([method.requestSerialize({ reporter: 'x', results: [result()] }).subarray(3 + 2), Buffer.from([15 << 3, 5, (9 << 3) | 2, 2, 65, 66])]);
    const bytes = Buffer.concat([Buffer.from([(1 << 3) | 2, 6]), Buffer.from('node-1'), Buffer.from([(2 << 3) | 2, inner.length]), inner, Buffer.from([(8 << 3) | 1, 1, 2, 3, 4, 5, 6, 7, 8])]);
    expect(decodeReportProbesRequest(bytes)).toEqual({ reporter: 'node-1', results: [withoutIp({ reporter: '', results: [result()] }).results[0]] });
  });

  it('names the first bad field, as the schema does', () => {
    expect(expectError(encode({ reporter: 'node-1', results: [result(), result({ kind: 'PROBE_KIND_UNSPECIFIED' as never })] }), 'results.1.kind').message).toContain(
      'PROBE_KIND_HOST_ICMP',
    );
    expectError(encode({ reporter: '', results: [] }), 'reporter');
    expectError(encode({ reporter: 'Node_1', results: [] }), 'reporter');
    expectError(encode({ reporter: 'node-1', results: [result({ target: '' })] }), 'results.0.target');
    expectError(encode({ reporter: 'node-1', results: [result({ target: 'n'.repeat(254) })] }), 'results.0.target');
    expectError(encode({ reporter: 'node-1', results: [result({ ip: '1'.repeat(65) })] }), 'results.0.ip');
    expectError(encode({ reporter: 'node-1', results: [result({ error: 'e'.repeat(513) })] }), 'results.0.error');
    expectError(encode({ reporter: 'node-1', results: [result({ rttUs: -1 })] }), 'results.0.rttUs');
    expectError(encode({ reporter: 'node-1', results: [result({ timeUnixMs: 0 })] }), 'results.0.timeUnixMs');
    expectError(encode({ reporter: 'node-1', results: [result({ timeUnixMs: 2 ** 60 })] }), 'results.0.timeUnixMs');
    // A bad reporter is named before a bad result, wherever it stands on the wire.
    expectError(Buffer.concat([encode({ reporter: '', results: [result({ target: '' })] }), encode({ reporter: 'Bad' })]), 'reporter');
    // Everything the hand decoder rejects, the schema rejects too.
    for (const bad of [{ reporter: 'node-1', results: [result({ rttUs: -1 })] }, { reporter: 'node-1', results: [result({ timeUnixMs: 0 })] }]) {
      expect(() => genericDecode(encode(bad))).toThrow(HealthApiError);
    }
  });

  it('answers an error, never throws, for bytes that are not a message', () => {
    const good = encode({ reporter: 'node-1', results: [result()] });
    for (const bytes of [good.subarray(0, good.length - 3), Buffer.from([0x0a, 0x7f]), Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), Buffer.from([(3 << 3) | 3])]) {
      expect(expectError(bytes, '(message)').message).toContain('not a valid protobuf message');
    }
  });

  it('encodes what the generic decoder reads back as the same request', () => {
    const request: ReportProbesRequest = {
      reporter: 'node-1',
      results: [
        result(),
        result({ kind: 'PROBE_KIND_ENDPOINT_HTTP', ok: false, rttUs: 0, error: 'délai dépassé ⏱ '.repeat(20), ip: 'fd00::1' }),
        result({ target: 'n'.repeat(200), kind: 'PROBE_KIND_HOST_HTTP', rttUs: 2 ** 40 + 7 }),
      ],
    };
    const bytes = encodeReportProbesRequest(request);
    expect(genericDecode(bytes)).toEqual(request);
    expect(decodeReportProbesRequest(bytes)).toEqual(withoutIp(request));
    expect(genericDecode(encodeReportProbesRequest({ reporter: 'node-2', results: [] }))).toEqual({ reporter: 'node-2', results: [] });
  });
});
