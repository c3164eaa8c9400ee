export * from './aggregator.ts';
export * from './server.ts';
export * from './node-source.ts';
