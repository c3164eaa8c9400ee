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

/**
 * Parses argv with commander and validates with zod. A bad flag or value ends the process with exit code 2 and one
 * line on stderr, the way every Sluice tool is expected to behave.
 */
export function parseOptions<S extends z.ZodType>(program: Command, schema: S, argv: readonly string[] = process.argv): z.infer<S> {
  program.showSuggestionAfterError(true).exitOverride((err) => {
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') process.exit(0);
    process.exit(2);
  });
  program.parse(argv as string[]);
  try {
    return validate(schema, program.opts());
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
