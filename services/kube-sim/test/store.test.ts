import { describe, expect, it } from 'vitest';
import { Store, type WatchSink } from '../src/index.ts';

const names = (store: Store, plural: string, query = {}) => store.list(plural, query).items.map((o) => o.key);

describe('store', () => {
  it('lists in key order through creates, deletes and re-creates between lists', () => {
    const store = new Store();
    let seed = 7;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
    const live = new Set<string>();
    const expectOrder = () => expect(names(store, 'configmaps', {})).toEqual([...live].sort());
    for (let round = 0; round < 30; round++) {
      for (let i = 0; i < 20; i++) {
        const name = `cm-${Math.floor(random() * 60)}`;
        const key = `default/${name}`;
        if (live.has(key) && random() < 0.5) {
          store.delete('configmaps', 'default', name);
          live.delete(key);
        } else if (live.has(key)) {
          store.mutate('configmaps', 'default', name, (o) => ({ ...o, data: { round: String(round) } }));
        } else {
          store.create('configmaps', { metadata: { name, namespace: 'default' }, data: {} });
          live.add(key);
        }
      }
      expectOrder();
      // A paginated list walks the same order.
      const pages: string[] = [];
      let token: string | undefined;
      do {
        const page = store.list('configmaps', { limit: 7, ...(token ? { continue: token } : {}) });
        pages.push(...page.items.map((o) => o.key));
        token = page.continue;
      } while (token);
      expect(pages).toEqual([...live].sort());
    }
  });

  it('sends each write to watchers as one event line carrying the stored object', () => {
    const store = new Store();
    const lines: string[] = [];
    store.watch('configmaps', { namespace: 'default', resourceVersion: String(store.resourceVersion) }, { write: (b) => lines.push(b.toString()), backlog: () => 0, end: () => undefined });
    const a = store.create('configmaps', { metadata: { name: 'a', namespace: 'default' }, data: { n: '1' } });
    const b = store.mutate('configmaps', 'default', 'a', (o) => ({ ...o, data: { n: '2' } }))!;
    const c = store.delete('configmaps', 'default', 'a');
    expect(lines).toEqual([a, b, c].map((o, i) => `{"type":"${['ADDED', 'MODIFIED', 'DELETED'][i]}","object":${o.json}}\n`));
    expect(lines.map((l) => (JSON.parse(l) as { object: { metadata: { resourceVersion: string }; data?: { n: string } } }).object.metadata.resourceVersion)).toEqual([a, b, c].map((o) => String(o.rv)));
  });

  it('serves an object as its bytes and its string alike, and a resumed watch still sees objects leave its selection', () => {
    const store = new Store();
    const created = store.create('configmaps', { metadata: { name: 'a', namespace: 'default', labels: { team: 'x' } }, data: { k: 'é' } });
    expect(created.bytes.toString()).toBe(created.json);
    expect(JSON.parse(created.json)).toMatchObject({ kind: 'ConfigMap', metadata: { name: 'a', resourceVersion: String(created.rv) }, data: { k: 'é' } });
    const from = created.rv;
    store.mutate('configmaps', 'default', 'a', (o) => ({ ...o, metadata: { ...o.metadata, labels: { team: 'y' } } }));
    store.mutate('configmaps', 'default', 'a', (o) => ({ ...o, metadata: { ...o.metadata, labels: { team: 'x' } } }));
    const lines: string[] = [];
    const sink: WatchSink = { write: (b) => lines.push(b.toString()), backlog: () => 0, end: () => undefined };
    // Replayed from the window: the first change took it out of team=x, the second brought it back.
    store.watch('configmaps', { namespace: 'default', labelSelector: 'team=x', resourceVersion: String(from) }, sink);
    expect(lines.map((l) => (JSON.parse(l) as { type: string }).type)).toEqual(['DELETED', 'ADDED']);
    expect((JSON.parse(lines[1]!) as { object: { metadata: { labels: Record<string, string> } } }).object.metadata.labels).toEqual({ team: 'x' });
  });
});
