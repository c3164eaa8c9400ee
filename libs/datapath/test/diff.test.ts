/**
 * diffMap (what the agent's reconcilers prune with), on kernel maps and the in-memory backend alike: which desired
 * rows are missing or differ, which map keys are not desired; it writes nothing.
 */
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { BPF_DIR, type EndpointValue } from '@sluice/bpf';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { diffMap, loadDatapath, memoryDatapath, removePins, type Datapath } from '../src/index.ts';

const pinDirs: string[] = [];
beforeAll(() => {
  execFileSync('make', ['-s', '-C', BPF_DIR]);
});
afterAll(() => {
  for (const d of pinDirs) removePins(d);
});

const v = (ifindex: number): EndpointValue => ({ ifindex, flags: 0, mac: '02:00:00:00:00:02', nodeMac: '02:00:00:00:00:03' });
const backends: Array<[string, () => Datapath]> = [
  ['kernel BPF maps', () => {
    const dir = `/sys/fs/bpf/sluice/sl-diff-${randomBytes(4).toString('hex')}`;
    pinDirs.push(dir);
    return loadDatapath({ pinDir: dir });
  }],
  ['in-memory backend', () => memoryDatapath()],
];

for (const [name, make] of backends) {
  describe(`diffMap: ${name}`, () => {
    it('names missing and different desired rows and the extra keys, and writes nothing', () => {
      const dp = make();
      try {
        dp.maps.endpoints.upsertBatch([[{ ip: '10.0.0.1' }, v(1)], [{ ip: '10.0.0.2' }, v(2)], [{ ip: '10.0.0.9' }, v(9)]]);
        const diff = diffMap(dp.maps.endpoints, [['10.0.0.1', v(1)], ['10.0.0.2', v(22)], ['10.0.0.3', v(3)]], (ip) => ({ ip }));
        expect(diff.outOfDate.sort()).toEqual(['10.0.0.2', '10.0.0.3']);
        expect(diff.extra).toEqual([{ ip: '10.0.0.9' }]);
        expect(dp.maps.endpoints.count()).toBe(3);
        // LPM keys compare by prefix bytes: an id with host bits names the same key.
        dp.maps.ipcache.upsertBatch([[{ cidr: '10.2.0.0/16' }, { nodeIp: '192.168.0.9', flags: 0 }]]);
        expect(diffMap(dp.maps.ipcache, [['10.2.3.4/16', { nodeIp: '192.168.0.9', flags: 0 }]], (cidr) => ({ cidr }))).toEqual({ outOfDate: [], extra: [] });
      } finally {
        dp.close();
      }
    });
  });
}
