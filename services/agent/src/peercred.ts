/**
 * The credentials of the process at the other end of a unix socket (SO_PEERCRED): Node has no API for it, so
 * getsockopt(2) is called through koffi on the accepted socket's fd. The kernel fills them in at connect() time;
 * they cannot be forged by the peer.
 */
import type { Socket } from 'node:net';
import koffi from 'koffi';

const SOL_SOCKET = 1;
const SO_PEERCRED = 17;

const libc = koffi.load('libc.so.6');
const getsockopt = libc.func('int getsockopt(int fd, int level, int optname, _Inout_ uint8_t *optval, _Inout_ uint32_t *optlen)') as (fd: number, level: number, name: number, value: Buffer, len: Buffer) => number;

export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

/** The peer of a connected unix socket; undefined when it is not one (a TCP socket) or the call fails. */
export function peerCredentials(socket: Socket): PeerCredentials | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return undefined;
  const value = Buffer.alloc(12);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(12, 0);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, value, len) !== 0) return undefined;
  return { pid: value.readInt32LE(0), uid: value.readUInt32LE(4), gid: value.readUInt32LE(8) };
}
