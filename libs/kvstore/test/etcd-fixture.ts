import { startEtcd, type EtcdOptions, type EtcdServer } from '@sluice/etcd-runner';
import { afterAll, beforeAll } from 'vitest';
import { createKvClient, type Etcd3 } from '../src/index.ts';

/** A real etcd and a client for the tests of one describe block: started before them, stopped after. */
export function realEtcd(options?: EtcdOptions): { readonly etcd: EtcdServer; readonly client: Etcd3 } {
  let etcd: EtcdServer | undefined;
  let client: Etcd3 | undefined;
  beforeAll(async () => {
    etcd = await startEtcd(options);
    client = createKvClient({ endpoints: [etcd.endpoint] });
  });
  afterAll(async () => {
    client?.close();
    await etcd?.stop();
  });
  return {
    get etcd() {
      if (!etcd) throw new Error('etcd is not started yet (use it inside a test)');
      return etcd;
    },
    get client() {
      if (!client) throw new Error('etcd is not started yet (use it inside a test)');
      return client;
    },
  };
}
