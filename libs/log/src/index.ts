import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger } from 'pino';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = LevelWithSilent;

export interface LoggerOptions {
  component: string;
  node?: string;
  level?: LogLevel;
  /** Where lines go; standard error by default so that stdout stays free for a command's own output. */
  destination?: pino.DestinationStream;
}

/** One JSON line per event, tagged with the component (and node, where there is one). */
export function createLogger(options: LoggerOptions): Logger {
  const level = options.level ?? levelFromEnv();
  const base: Record<string, string> = { component: options.component };
  if (options.node) base.node = options.node;
  return pino(
    { level, base, timestamp: pino.stdTimeFunctions.isoTime },
    options.destination ?? pino.destination({ fd: 2, sync: false }),
  );
}

function levelFromEnv(): LogLevel {
  const fromEnv = process.env.SLUICE_LOG_LEVEL;
  return (LOG_LEVELS as readonly string[]).includes(fromEnv ?? '') ? (fromEnv as LogLevel) : 'info';
}

/**
 * Logs a recurring condition once, then stays quiet for `quietMs` while counting repeats, so that a
 * failing dependency retried every second yields one line per window instead of a flood.
 */
export class RepeatSuppressor {
  private readonly lastLogged = new Map<string, { at: number; suppressed: number }>();

  constructor(
    private readonly quietMs = 60_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** Returns how many repeats were suppressed since the last line, or undefined when this one must stay quiet. */
  shouldLog(key: string): number | undefined {
    const entry = this.lastLogged.get(key);
    const now = this.now();
    if (!entry || now - entry.at >= this.quietMs) {
      const suppressed = entry?.suppressed ?? 0;
      this.lastLogged.set(key, { at: now, suppressed: 0 });
      return suppressed;
    }
    entry.suppressed++;
    return undefined;
  }

  /** Forgets a key once its condition has cleared, so that its next occurrence is reported at once. */
  clear(key: string): void {
    this.lastLogged.delete(key);
  }

  warn(log: Logger, key: string, fields: Record<string, unknown>, message: string): void {
    const suppressed = this.shouldLog(key);
    if (suppressed === undefined) return;
    log.warn(suppressed > 0 ? { ...fields, suppressedRepeats: suppressed } : fields, message);
  }
}
