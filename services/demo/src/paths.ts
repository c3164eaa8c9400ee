import { fileURLToPath } from 'node:url';

/** The repository, whatever the cwd: the demo's services and the default state dir are found from here. */
export const REPO_ROOT = fileURLToPath(new URL('../../..', import.meta.url)).replace(/\/$/, '');
