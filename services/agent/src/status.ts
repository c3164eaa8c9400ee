/**
 * What the agent publishes about itself in etcd, on its own lease: the AgentStatus record (only when it changed,
 * debounced, so pod churn does not turn into a stream of etcd writes) and the HealthEndpoint record.
 */
import { agentStatusRecord, healthEndpointRecord, type AgentStatusRecord, type HealthEndpointRecord, type KeySchema, type LeasedKeys } from '@sluice/kvstore';
import type { Logger } from '@sluice/log';

export class StatusPublisher {
  private last = '';
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly options: { leased: LeasedKeys; keys: KeySchema; node: string; build: () => AgentStatusRecord; debounceMs?: number; log: Logger },
  ) {}

  /** Publishes soon if the record differs from the last one published. */
  update(): void {
    if (this.closed || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.publishNow();
    }, this.options.debounceMs ?? 1000);
  }

  publishNow(): void {
    if (this.closed) return;
    const record = agentStatusRecord.parse(this.options.build());
    const text = JSON.stringify(record);
    if (text === this.last) return;
    this.last = text;
    this.options.leased.put(this.options.keys.agent(this.options.node), text).catch((err: unknown) => {
      this.options.log.warn({ error: (err as Error).message }, 'publishing agent status failed');
    });
  }

  async publishHealth(record: HealthEndpointRecord): Promise<void> {
    await this.options.leased.put(this.options.keys.health(this.options.node), JSON.stringify(healthEndpointRecord.parse(record)));
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
  }
}
