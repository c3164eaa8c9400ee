/**
 * Least privilege through etcd's own users and roles. Who may do what, derived from the key schema (keys.ts):
 *
 * | user (= client certificate CN)  | role                       | may                                                        |
 * | ------------------------------- | -------------------------- | ---------------------------------------------------------- |
 * | sluice-operator                 | sluice-operator            | read everything under <root>v1/; write nodes/, pods/, services/, endpointslices/, synced/, operator/, l2announcements/, effectiveconfig/ |
 * | sluice-agent-<node>             | sluice-agent-<node>        | read everything under <root>v1/; write agents/<node> and health/<node> only |
 * | sluice-health, sluice-cli       | sluice-reader              | read everything under <root>v1/                             |
 * | root                            | root                       | everything (administration, nodeconfig/ records)           |
 *
 * One role per node because etcd permissions are key ranges: "its own node's key" cannot be one role for all
 * agents. With etcd's --client-cert-auth the certificate's CN is the user, so users are created without a password
 * (etcd ≥ 3.4); a password can be set for users that log in with one instead.
 *
 * `setupAuth` converges: run it again with more nodes (a node joined) and it adds their users and roles; it revokes
 * permissions a role should no longer have. Then it enables authentication (unless told not to).
 */
import type { Etcd3, IPermission } from 'etcd3';
import { errorMessage } from './errors.ts';
import type { KeySchema } from './keys.ts';
import { prefixRangeEnd } from './watcher.ts';

export const ETCD_USERS = {
  root: 'root',
  operator: 'sluice-operator',
  health: 'sluice-health',
  cli: 'sluice-cli',
  agent: (node: string) => `sluice-agent-${node}`,
} as const;

export const ETCD_ROLES = {
  operator: 'sluice-operator',
  reader: 'sluice-reader',
  agent: (node: string) => `sluice-agent-${node}`,
} as const;

export type PermissionType = 'Read' | 'Write' | 'Readwrite';

/** One grant: a single key, or every key under a prefix. */
export interface Grant {
  permission: PermissionType;
  key: string;
  prefix: boolean;
}

export interface AuthPlan {
  roles: Array<{ name: string; grants: Grant[] }>;
  users: Array<{ name: string; roles: string[] }>;
}

/** The roles and users for a cluster of these nodes. */
export function authPlan(keys: KeySchema, nodes: readonly string[]): AuthPlan {
  const everything = keys.prefix('nodes').replace(/nodes\/$/, '');
  const read: Grant = { permission: 'Read', key: everything, prefix: true };
  const operatorWrites = (['nodes', 'pods', 'services', 'endpointslices', 'synced', 'operator', 'l2announcements', 'effectiveconfig'] as const).map((c): Grant => ({ permission: 'Readwrite', key: keys.prefix(c), prefix: true }));
  const roles: AuthPlan['roles'] = [
    { name: ETCD_ROLES.operator, grants: [read, ...operatorWrites] },
    { name: ETCD_ROLES.reader, grants: [read] },
  ];
  const users: AuthPlan['users'] = [
    { name: ETCD_USERS.root, roles: ['root'] },
    { name: ETCD_USERS.operator, roles: [ETCD_ROLES.operator] },
    { name: ETCD_USERS.health, roles: [ETCD_ROLES.reader] },
    { name: ETCD_USERS.cli, roles: [ETCD_ROLES.reader] },
  ];
  for (const node of nodes) {
    roles.push({
      name: ETCD_ROLES.agent(node),
      // l2leases: agents compete for the addresses they may announce (create-if-absent on their own lease).
      grants: [read, { permission: 'Readwrite', key: keys.agent(node), prefix: false }, { permission: 'Readwrite', key: keys.health(node), prefix: false }, { permission: 'Readwrite', key: keys.prefix('l2leases'), prefix: true }],
    });
    users.push({ name: ETCD_USERS.agent(node), roles: [ETCD_ROLES.agent(node)] });
  }
  return { roles, users };
}

export interface SetupAuthOptions {
  /** Nodes whose agents get a user and role. */
  nodes: readonly string[];
  /** A password for a user that logs in with one; users without one authenticate by their certificate's CN. */
  password?: (user: string) => string | undefined;
  /** Turn authentication on at the end (default true). */
  enable?: boolean;
}

export interface SetupAuthReport {
  rolesCreated: string[];
  usersCreated: string[];
  grants: number;
  revoked: number;
  enabled: boolean;
}

const exists = (err: unknown) => /already exists/i.test(errorMessage(err));

function toPermission(grant: Grant): IPermission {
  const key = Buffer.from(grant.key);
  // A single key is a permission without range_end; a prefix is [prefix, prefixRangeEnd).
  return { permType: grant.permission, key, range_end: grant.prefix ? prefixRangeEnd(key) : Buffer.alloc(0) };
}

const samePermission = (a: IPermission, b: IPermission) =>
  a.permType === b.permType && Buffer.compare(a.key, b.key) === 0 && Buffer.compare(a.range_end ?? Buffer.alloc(0), b.range_end ?? Buffer.alloc(0)) === 0;

/** Creates (or completes) Sluice's roles and users with a client allowed to administer etcd, then enables auth. */
export async function setupAuth(client: Etcd3, keys: KeySchema, options: SetupAuthOptions): Promise<SetupAuthReport> {
  const plan = authPlan(keys, options.nodes);
  const report: SetupAuthReport = { rolesCreated: [], usersCreated: [], grants: 0, revoked: 0, enabled: false };
  // etcd wants a root user holding the root role before it enables auth; the role needs no permissions.
  try {
    await client.auth.roleAdd({ name: 'root' });
    report.rolesCreated.push('root');
  } catch (err) {
    if (!exists(err)) throw err;
  }
  for (const role of plan.roles) {
    try {
      await client.auth.roleAdd({ name: role.name });
      report.rolesCreated.push(role.name);
    } catch (err) {
      if (!exists(err)) throw err;
    }
    const wanted = role.grants.map(toPermission);
    const current = (await client.auth.roleGet({ role: role.name })).perm ?? [];
    for (const perm of current) {
      if (wanted.some((w) => samePermission(w, perm))) continue;
      await client.auth.roleRevokePermission({ role: role.name, key: perm.key, range_end: perm.range_end });
      report.revoked++;
    }
    for (const perm of wanted) {
      if (current.some((c) => samePermission(c, perm))) continue;
      await client.auth.roleGrantPermission({ name: role.name, perm });
      report.grants++;
    }
  }
  for (const user of plan.users) {
    const password = options.password?.(user.name);
    try {
      await client.auth.userAdd(password ? { name: user.name, password } : { name: user.name, options: { no_password: true } });
      report.usersCreated.push(user.name);
    } catch (err) {
      if (!exists(err)) throw err;
      if (password) await client.auth.userChangePassword({ name: user.name, password });
    }
    for (const role of user.roles) await client.auth.userGrantRole({ user: user.name, role });
  }
  if (options.enable ?? true) {
    await client.auth.authEnable();
    report.enabled = true;
  }
  return report;
}
