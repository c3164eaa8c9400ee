#!/usr/bin/env -S npx tsx
/** `sluice`: the command-line tool of a Sluice cluster (see cli.ts for the commands). */
import { runCli } from './cli.ts';

process.exitCode = await runCli(process.argv.slice(2));
