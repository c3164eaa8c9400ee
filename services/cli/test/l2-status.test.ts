import { describe, expect, it } from 'vitest';
import { l2AnnouncementsSection } from '../src/status.ts';

const local = (announcing: string[], eligible = announcing.length, uplinkUp = true) => ({ etcd: { connected: true, retries: 0, decodeErrors: 0 }, l2Announcements: { eligible, announcing, uplinkUp } });

describe('sluice status: L2 Announcements', () => {
  it('names the node announcing each address', () => {
    const s = l2AnnouncementsSection(new Map([['n1', local(['192.0.2.10'])], ['n2', local([], 1)], ['n3', local([], 0)]]));
    expect(s).toMatchObject({ state: 'Ok', summary: '1 address announced (192.0.2.10 on n1), 2/3 agents eligible', data: { '192.0.2.10': ['n1'] } });
  });

  it('warns about an address two nodes announce, and says where the uplink is down', () => {
    const s = l2AnnouncementsSection(new Map([['n1', local(['192.0.2.10'])], ['n2', local(['192.0.2.10'])], ['n3', local([], 0, false)]]));
    expect(s.state).toBe('Warning');
    expect(s.summary).toContain('announced by more than one node: 192.0.2.10');
    expect(s.summary).toContain('uplink down on n3');
  });

  it('is Disabled when no policy gives any agent an address', () => {
    expect(l2AnnouncementsSection(new Map([['n1', local([], 0)]])).state).toBe('Disabled');
    expect(l2AnnouncementsSection(new Map()).summary).toContain('unknown');
  });
});
