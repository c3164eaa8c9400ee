export * from './maps.ts';
