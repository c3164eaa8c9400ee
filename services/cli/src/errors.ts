/** A failure the user can act on: printed as one line (`sluice: <message>`), exit code as given. */
export class CliError extends Error {
  override name = 'CliError';
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

/** The first line of an error's message, without gRPC/etcd3 prefixes that say nothing to a user. */
export function oneLine(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return (message.split('\n')[0] ?? message).replace(/^\d+ [A-Z_]+: /, '').trim();
}
