/**
 * @sluice/agent: the node agent as a library.
 * - AgentCore (core.ts): etcd → tables → reconcilers → maps; what the scale harness embeds (with memoryDatapath()).
 * - Reconciler (reconciler.ts): the generic loop every target uses; targets in reconcilers/, tables in tables/.
 * - runAgent (agent.ts): a full agent over a node's pinned maps and network namespace (what main.ts runs).
 */
export * from './core.ts';
export * from './reconciler.ts';
export { mapTarget, splitTarget, filteredRows, type MapTargetOptions } from './reconcilers/bpf-map.ts';
export { RoutesTarget, ROUTE_PROTO, type RoutesTargetOptions } from './reconcilers/routes.ts';
export { Table, type RowListener } from './tables/table.ts';
export { runAgent, AGENT_VERSION, type AgentOptions, type RunningAgent } from './agent.ts';
export { startAgentApi, type AgentApi, type AgentApiOptions } from './api.ts';
export { LocalEndpointStore, localEndpointSchema, type LocalEndpointRecord } from './local-store.ts';
export { StatusPublisher } from './status.ts';
export { startHealthListener, type HealthListener, type HttpProbeOutcome } from './health-listener.ts';
export { startHealthProbing, type HealthProbing, type HealthProbingOptions } from './health-probing.ts';
export { buildLbService, ServicesTable } from './tables/services.ts';
export { startServices, servicesTarget, collectConntrack, type Services, type ServicesOptions, type ServicesStatus } from './reconcilers/services.ts';
