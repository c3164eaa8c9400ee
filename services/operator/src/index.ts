export { Operator, type OperatorOptions, type OperatorStatus } from './operator.ts';
export { loadKubeConfig, apiServerOrigin, type KubeSource } from './kube-client.ts';
export { trackApiTraffic, type ApiTraffic } from './traffic.ts';
