import { fileURLToPath } from 'node:url';

export * from './plugin.ts';
export * from './ipam.ts';

/** The plugin executable (a bash wrapper that runs main.ts). */
export const CNI_BINARY = fileURLToPath(new URL('../bin/sluice-cni', import.meta.url));
