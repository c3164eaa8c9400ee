export * from './plan.ts';
export * from './probes.ts';
export * from './responder.ts';
export * from './prober.ts';
export * from './peers.ts';
