/**
 * @sluice/agent: the node agent as a library.
 * - AgentCore (core.ts): etcd → maps; what the scale harness embeds (with memoryDatapath()).
 * - runAgent (agent.ts): a full agent over a node's pinned maps and network namespace (what main.ts runs).
 */
export * from './core.ts';
export { runAgent, AGENT_VERSION, type AgentOptions, type RunningAgent } from './agent.ts';
export { startAgentApi, type AgentApi, type AgentApiOptions } from './api.ts';
export { LocalEndpointStore, localEndpointSchema, type LocalEndpointRecord } from './local-store.ts';
export { NetnsRoutes, ROUTE_PROTO, type NetnsRoutesOptions } from './routes.ts';
export { StatusPublisher } from './status.ts';
export { startHealthListener, type HealthListener, type HttpProbeOutcome } from './health-listener.ts';
export { startHealthProbing, type HealthProbing, type HealthProbingOptions } from './health-probing.ts';
