import { isRecoverableError } from 'etcd3';

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Whether a failed etcd call is worth another try with backoff: overload (`etcdserver: too many requests`, gRPC
 * RESOURCE_EXHAUSTED), unavailability, deadlines, a leader election inside etcd, or any error etcd3 marks recoverable.
 * Everything else (bad request, permission) would fail the same way again.
 */
export function isRetryableEtcdError(err: unknown): boolean {
  if (err instanceof Error && isRecoverableError(err)) return true;
  return /too many requests|unavailable|deadline|timed out|timeout|leader changed|no leader|not capable|ECONNREFUSED|ECONNRESET|closed|Resource exhausted|RESOURCE_EXHAUSTED/i.test(
    messageOf(err),
  );
}

/** etcd answers "required revision has been compacted" to a read or watch older than its compaction point. */
export function isCompactedError(err: unknown): boolean {
  return /compacted/i.test(messageOf(err));
}

/**
 * etcd3 1.1.2 reports a watch cancelled by the server (compaction, among others) only as an error "Watcher canceled:
 * <reason>", and the reason is often empty; the only safe reaction to any cancel is a relist.
 */
export function isWatchCanceledError(err: unknown): boolean {
  return /Watcher canceled/i.test(messageOf(err)) || isCompactedError(err);
}

export function errorMessage(err: unknown): string {
  return messageOf(err);
}
