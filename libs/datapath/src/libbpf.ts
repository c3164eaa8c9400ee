/**
 * The few libbpf 1.x (libbpf.so.1) and libc functions Sluice needs, bound with koffi. libbpf 1.x returns -errno
 * from int functions and NULL + errno from pointer functions; `check`/`checkPtr` turn both into BpfError.
 */
import { constants } from 'node:os';
import koffi from 'koffi';

const errnoNames = new Map<number, string>();
for (const [name, value] of Object.entries(constants.errno)) if (!errnoNames.has(value)) errnoNames.set(value, name);

export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `errno ${errno}`;
}

/** A failed libbpf/bpf(2) call: `code` is the errno name (ENOENT, E2BIG…), `errno` its number. */
export class BpfError extends Error {
  override name = 'BpfError';
  readonly code: string;
  constructor(
    readonly op: string,
    readonly errno: number,
    detail?: string,
  ) {
    super(`${op}: ${errnoName(errno)}${detail ? ` (${detail})` : ''}`);
    this.code = errnoName(errno);
  }
}

const lib = koffi.load('libbpf.so.1');
const libc = koffi.load('libc.so.6');

export const BpfTcHook = koffi.struct('bpf_tc_hook', {
  sz: 'size_t',
  ifindex: 'int',
  attach_point: 'int',
  parent: 'uint32_t',
});
export const BpfTcOpts = koffi.struct('bpf_tc_opts', {
  sz: 'size_t',
  prog_fd: 'int',
  flags: 'uint32_t',
  prog_id: 'uint32_t',
  handle: 'uint32_t',
  priority: 'uint32_t',
});
export const BpfTestRunOpts = koffi.struct('bpf_test_run_opts', {
  sz: 'size_t',
  data_in: 'void *',
  data_out: 'void *',
  data_size_in: 'uint32_t',
  data_size_out: 'uint32_t',
  ctx_in: 'void *',
  ctx_out: 'void *',
  ctx_size_in: 'uint32_t',
  ctx_size_out: 'uint32_t',
  retval: 'uint32_t',
  repeat: 'int',
  duration: 'uint32_t',
  flags: 'uint32_t',
  cpu: 'uint32_t',
  batch_size: 'uint32_t',
});

export interface TcHook {
  sz: number;
  ifindex: number;
  attach_point: number;
  parent: number;
}
export interface TcOpts {
  sz: number;
  prog_fd: number;
  flags: number;
  prog_id: number;
  handle: number;
  priority: number;
}
export interface TestRunOpts {
  sz: number;
  data_in: Buffer | null;
  data_out: Buffer | null;
  data_size_in: number;
  data_size_out: number;
  /** XDP's context (xdp_md) for live frames: the ingress ifindex and queue. */
  ctx_in: Buffer | null;
  ctx_out: null;
  ctx_size_in: number;
  ctx_size_out: number;
  retval: number;
  repeat: number;
  duration: number;
  flags: number;
  cpu: number;
  batch_size: number;
}

type Ptr = unknown;

export const bpf = {
  objectOpenFile: lib.func('void *bpf_object__open_file(const char *path, void *opts)') as (path: string, opts: null) => Ptr | null,
  objectLoad: lib.func('int bpf_object__load(void *obj)') as (obj: Ptr) => number,
  objectClose: lib.func('void bpf_object__close(void *obj)') as (obj: Ptr) => void,
  findMap: lib.func('void *bpf_object__find_map_by_name(void *obj, const char *name)') as (obj: Ptr, name: string) => Ptr | null,
  findProgram: lib.func('void *bpf_object__find_program_by_name(void *obj, const char *name)') as (obj: Ptr, name: string) => Ptr | null,
  mapSetPinPath: lib.func('int bpf_map__set_pin_path(void *map, const char *path)') as (map: Ptr, path: string) => number,
  mapSetMaxEntries: lib.func('int bpf_map__set_max_entries(void *map, uint32_t max)') as (map: Ptr, max: number) => number,
  mapIsPinned: lib.func('bool bpf_map__is_pinned(void *map)') as (map: Ptr) => boolean,
  mapFd: lib.func('int bpf_map__fd(void *map)') as (map: Ptr) => number,
  programFd: lib.func('int bpf_program__fd(void *prog)') as (prog: Ptr) => number,
  programPin: lib.func('int bpf_program__pin(void *prog, const char *path)') as (prog: Ptr, path: string) => number,
  objGet: lib.func('int bpf_obj_get(const char *path)') as (path: string) => number,
  objPin: lib.func('int bpf_obj_pin(int fd, const char *path)') as (fd: number, path: string) => number,
  objGetInfoByFd: lib.func('int bpf_obj_get_info_by_fd(int fd, void *info, _Inout_ uint32_t *len)') as (
    fd: number,
    info: Buffer,
    len: number[],
  ) => number,
  mapUpdateElem: lib.func('int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)') as (
    fd: number,
    key: Buffer,
    value: Buffer,
    flags: number,
  ) => number,
  mapLookupElem: lib.func('int bpf_map_lookup_elem(int fd, const void *key, void *value)') as (fd: number, key: Buffer, value: Buffer) => number,
  mapDeleteElem: lib.func('int bpf_map_delete_elem(int fd, const void *key)') as (fd: number, key: Buffer) => number,
  mapGetNextKey: lib.func('int bpf_map_get_next_key(int fd, const void *key, void *next)') as (fd: number, key: Buffer | null, next: Buffer) => number,
  mapUpdateBatch: lib.func('int bpf_map_update_batch(int fd, const void *keys, const void *values, _Inout_ uint32_t *count, void *opts)') as (
    fd: number,
    keys: Buffer,
    values: Buffer,
    count: number[],
    opts: null,
  ) => number,
  mapDeleteBatch: lib.func('int bpf_map_delete_batch(int fd, const void *keys, _Inout_ uint32_t *count, void *opts)') as (
    fd: number,
    keys: Buffer,
    count: number[],
    opts: null,
  ) => number,
  mapLookupBatch: lib.func(
    'int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values, _Inout_ uint32_t *count, void *opts)',
  ) as (fd: number, inBatch: Buffer | null, outBatch: Buffer, keys: Buffer, values: Buffer, count: number[], opts: null) => number,
  tcHookCreate: lib.func('int bpf_tc_hook_create(bpf_tc_hook *hook)') as (hook: TcHook) => number,
  tcHookDestroy: lib.func('int bpf_tc_hook_destroy(bpf_tc_hook *hook)') as (hook: TcHook) => number,
  tcAttach: lib.func('int bpf_tc_attach(bpf_tc_hook *hook, _Inout_ bpf_tc_opts *opts)') as (hook: TcHook, opts: TcOpts) => number,
  tcDetach: lib.func('int bpf_tc_detach(bpf_tc_hook *hook, bpf_tc_opts *opts)') as (hook: TcHook, opts: TcOpts) => number,
  tcQuery: lib.func('int bpf_tc_query(bpf_tc_hook *hook, _Inout_ bpf_tc_opts *opts)') as (hook: TcHook, opts: TcOpts) => number,
  xdpAttach: lib.func('int bpf_xdp_attach(int ifindex, int prog_fd, uint32_t flags, void *opts)') as (ifindex: number, progFd: number, flags: number, opts: null) => number,
  xdpDetach: lib.func('int bpf_xdp_detach(int ifindex, uint32_t flags, void *opts)') as (ifindex: number, flags: number, opts: null) => number,
  xdpQueryId: lib.func('int bpf_xdp_query_id(int ifindex, int flags, _Out_ uint32_t *prog_id)') as (ifindex: number, flags: number, id: [number]) => number,
  progTestRun: lib.func('int bpf_prog_test_run_opts(int fd, _Inout_ bpf_test_run_opts *opts)') as (fd: number, opts: TestRunOpts) => number,
  probeHelper: lib.func('int libbpf_probe_bpf_helper(int prog_type, int helper_id, void *opts)') as (
    progType: number,
    helperId: number,
    opts: null,
  ) => number,
  setPrint: lib.func('void *libbpf_set_print(void *fn)') as (fn: unknown) => unknown,
  numPossibleCpus: lib.func('int libbpf_num_possible_cpus(void)') as () => number,
};

export const libcFns = {
  setns: libc.func('int setns(int fd, int nstype)') as (fd: number, nstype: number) => number,
  ifNameToIndex: libc.func('unsigned int if_nametoindex(const char *name)') as (name: string) => number,
  close: libc.func('int close(int fd)') as (fd: number) => number,
};

export const TC_INGRESS = 1;
export const TC_EGRESS = 2;
export const TC_F_REPLACE = 1;
export const PROG_TYPE_SCHED_CLS = 3;
export const FUNC_REDIRECT_NEIGH = 152;
export const FUNC_REDIRECT_PEER = 155;
export const CLONE_NEWNET = 0x40000000;

export function lastErrno(): number {
  return koffi.errno();
}

/** Throws BpfError for a negative libbpf return; returns it otherwise. */
export function check(op: string, ret: number, detail?: string): number {
  if (ret < 0) throw new BpfError(op, -ret, detail);
  return ret;
}

/** Pointer returns: NULL means failure with errno set. */
export function checkPtr<T>(op: string, ptr: T | null, detail?: string): T {
  if (!ptr) throw new BpfError(op, lastErrno() || 22, detail);
  return ptr;
}

export function closeFd(fd: number): void {
  if (fd >= 0) libcFns.close(fd);
}
