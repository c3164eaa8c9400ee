export * from './schema.ts';
export * from './codec.ts';
export * from './convert.ts';
