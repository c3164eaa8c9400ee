export * from './schema.ts';
export * from './codec.ts';
export * from './convert.ts';
export * from './l2.ts';
