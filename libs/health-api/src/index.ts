export * from './proto.ts';
export * from './types.ts';
export * from './client.ts';
export * from './format.ts';
export * from './wire.ts';
