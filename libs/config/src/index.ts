import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { z } from 'zod';

export { Command, Option } from 'commander';
export { z } from 'zod';

/** The name of the environment variable that stands in for a flag: --etcd-endpoints → SLUICE_ETCD_ENDPOINTS. */
export function envName(longFlag: string): string {
  return `SLUICE_${longFlag.replace(/^--/, '').replace(/-/g, '_').toUpperCase()}`;
}

/** A flag that may also come from the environment (SLUICE_*), flags winning. */
export function flag(flags: string, description: string, defaultValue?: string | boolean | string[]): Option {
  const long = flags.split(/[ ,|]+/).find((f) => f.startsWith('--'));
  const option = new Option(flags, description);
  if (long && !long.startsWith('--no-')) option.env(envName(long));
  if (defaultValue !== undefined) option.default(defaultValue);
  return option;
}

function kebab(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

export class ConfigError extends Error {}

/** Validates parsed options; throws ConfigError naming the flag of the first bad value. */
export function validate<S extends z.ZodType>(schema: S, options: unknown): z.infer<S> {
  const result = schema.safeParse(options);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const key = issue.path[0];
  const where = typeof key === 'string' ? `--${kebab(key)}` : 'options';
  throw new ConfigError(`invalid ${where}: ${issue.message}`);
}

/** The version every Sluice binary prints with --version (one version for the whole project). */
export const VERSION: string = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

const CONFIG_DIR_FLAG = '--config-dir';

/** Finds --config-dir in argv (either form), else $SLUICE_CONFIG_DIR. Read before parsing, since it supplies values. */
export function configDirOf(argv: readonly string[], env: NodeJS.ProcessEnv): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') break;
    if (arg === CONFIG_DIR_FLAG) return argv[i + 1];
    if (arg.startsWith(`${CONFIG_DIR_FLAG}=`)) return arg.slice(CONFIG_DIR_FLAG.length + 1);
  }
  return env[envName(CONFIG_DIR_FLAG)] || undefined;
}

/**
 * Reads a configuration directory (a mounted ConfigMap: one file per key, the key being the long flag name without
 * its dashes, e.g. `etcd-endpoints`) into the command's options with source 'config'. Commander then lets the
 * environment and the command line override them: flags > SLUICE_* environment > configuration directory > defaults.
 * Files that name no option of this binary are ignored, so one ConfigMap can serve several binaries; dot files
 * (a ConfigMap mount's `..data` links) are skipped.
 */
export function applyConfigDir(program: Command, dir: string): void {
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => !n.startsWith('.'));
  } catch (err) {
    throw new ConfigError(`invalid ${CONFIG_DIR_FLAG}: cannot read ${dir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const byName = new Map(program.options.filter((o) => o.long).map((o) => [o.long!.replace(/^--/, ''), o]));
  for (const name of names) {
    const option = byName.get(name);
    if (!option || option.negate || name === CONFIG_DIR_FLAG.slice(2) || name === 'help' || name === 'version') continue;
    let text: string;
    try {
      text = readFileSync(join(dir, name), 'utf8').trim();
    } catch (err) {
      throw new ConfigError(`invalid ${CONFIG_DIR_FLAG}: cannot read ${join(dir, name)}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    let value: string | boolean = text;
    if (option.isBoolean()) {
      if (!/^(true|false)$/i.test(text)) throw new ConfigError(`invalid --${name}: ${join(dir, name)} must hold true or false, got "${text}"`);
      value = text.toLowerCase() === 'true';
    }
    program.setOptionValueWithSource(option.attributeName(), value, 'config');
  }
}

/** Adds --version and --config-dir to a command that lacks them. */
export function addStandardOptions(program: Command): Command {
  if (!program.options.some((o) => o.long === '--version')) program.version(VERSION, '--version', 'print the version and exit');
  if (!program.options.some((o) => o.long === CONFIG_DIR_FLAG)) {
    program.addOption(flag(`${CONFIG_DIR_FLAG} <dir>`, 'configuration directory, one file per flag name (a mounted ConfigMap); flags and SLUICE_* variables override it'));
  }
  return program;
}

/** Commander's error text on one line (its suggestion joined to it), as every Sluice tool reports a bad flag. */
export function oneLineError(text: string): string {
  return `${text.trim().split(/\n+/).map((l) => l.trim()).join(' ')}\n`;
}

/**
 * Parses argv with commander and validates with zod, after adding --version and --config-dir. A bad flag or value
 * ends the process with exit code 2 and one line on stderr, the way every Sluice tool is expected to behave.
 */
export function parseOptions<S extends z.ZodType>(program: Command, schema: S, argv: readonly string[] = process.argv, env: NodeJS.ProcessEnv = process.env): z.infer<S> {
  addStandardOptions(program);
  program
    .showSuggestionAfterError(true)
    .configureOutput({ outputError: (text, write) => write(oneLineError(text)) })
    // Help and --version end with 0; every parse error with 2.
    .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2));
  return configOrExit(program, () => {
    const dir = configDirOf(argv.slice(2), env);
    if (dir) applyConfigDir(program, dir);
    program.parse(argv as string[]);
    return validate(schema, program.opts());
  });
}

/** Runs a step of reading the configuration; a ConfigError ends the process with exit code 2 and one line. */
export function configOrExit<T>(program: Command, step: () => T): T {
  try {
    return step();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`${program.name()}: ${err.message}\n`);
    process.exit(2);
  }
}

/** Reusable value schemas; string inputs because flags and environment variables arrive as text. */
export const schemas = {
  port: z.coerce.number().int().min(0).max(65535),
  positiveInt: z.coerce.number().int().positive(),
  nonNegativeInt: z.coerce.number().int().min(0),
  positiveNumber: z.coerce.number().positive(),
  url: z.string().url(),
  /** A comma-separated list of http(s) URLs, as etcd's --endpoints takes them. */
  endpoints: z
    .union([z.string(), z.array(z.string())])
    .transform((v) => (Array.isArray(v) ? v : v.split(',')).map((s) => s.trim()).filter(Boolean))
    .pipe(z.array(z.string().url().regex(/^https?:\/\//, 'must start with http:// or https://')).min(1, 'needs at least one endpoint')),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
  /** A duration such as 500ms, 10s, 5m or a bare number of milliseconds, as milliseconds. */
  duration: z.union([z.number(), z.string()]).transform((value, ctx) => {
    const ms = parseDuration(value);
    if (ms === undefined) {
      ctx.addIssue({ code: 'custom', message: `expected a duration like 500ms, 10s or 5m, got "${value}"` });
      return z.NEVER;
    }
    return ms;
  }),
};

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

export function parseDuration(value: number | string): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? value : undefined;
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(value);
  if (!match) return undefined;
  return Number(match[1]) * UNIT_MS[match[2] ?? 'ms']!;
}

export * from './etcd.ts';
