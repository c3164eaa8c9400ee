/** The L2 announcements table: what this node may announce (eligible) and must announce (held and eligible). */
import { describe, expect, it } from 'vitest';
import { createLogger } from '@sluice/log';
import type { SlimL2Announcement } from '@sluice/slim';
import { L2AnnouncementsTable } from '../src/tables/l2-announcements.ts';

const log = createLogger({ component: 'test', level: 'silent' });
const policy = (name: string, extra: Partial<SlimL2Announcement> = {}): SlimL2Announcement => ({
  v: 1, name, interfaces: [], addresses: [{ ip: '192.0.2.10', service: 'default/web' }], ...extra,
});

function table() {
  const t = new L2AnnouncementsTable('eth0', log);
  const changed: string[] = [];
  t.follow({ changed: (key) => void changed.push(key) });
  return { t, changed };
}

describe('L2 announcements table', () => {
  it('is eligible only with its node labels known, its uplink up, the node selector and an interface pattern matching', () => {
    const { t } = table();
    t.setPolicy('p', policy('p', { nodeSelector: { matchLabels: { edge: 'true' } }, interfaces: ['^bond', '^eth[0-9]$'] }));
    expect(t.eligible().size).toBe(0); // no labels yet, no carrier
    t.setNodeLabels({ edge: 'true' });
    expect(t.eligible().size).toBe(0);
    t.setUplinkUp(true);
    expect([...t.eligible().keys()]).toEqual(['192.0.2.10']);
    t.setNodeLabels({ edge: 'false' });
    expect(t.eligible().size).toBe(0);
    t.setNodeLabels({ edge: 'true' });
    t.setPolicy('p', policy('p', { interfaces: ['^wlan'] }));
    expect(t.eligible().size).toBe(0);
    t.setPolicy('p', policy('p', { interfaces: ['(unclosed'] })); // a bad pattern matches nothing, and does not throw
    expect(t.eligible().size).toBe(0);
  });

  it('desires only held, eligible IPv4 addresses, and tells its followers what changed', () => {
    const { t, changed } = table();
    t.setNodeLabels({});
    t.setUplinkUp(true);
    t.setPolicy('p', policy('p', { addresses: [{ ip: '192.0.2.10', service: 'default/web' }, { ip: '2001:db8::1', service: 'default/v6' }] }));
    expect([...t.eligible().keys()]).toEqual(['192.0.2.10']); // ARP only: IPv6 would need NDP
    expect(t.size).toBe(0);
    t.setHeld('192.0.2.10', true);
    expect([...t.entries()]).toEqual([['192.0.2.10', { ip: '192.0.2.10', service: 'default/web', policy: 'p', dev: 'eth0' }]]);
    changed.length = 0;
    t.setUplinkUp(false); // carrier lost: held but no longer desired
    expect(t.get('192.0.2.10')).toBeUndefined();
    expect(changed).toEqual(['192.0.2.10']);
    t.setUplinkUp(true);
    t.setPolicy('p', undefined);
    expect(t.size).toBe(0);
  });
});
