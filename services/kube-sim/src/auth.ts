/**
 * Bearer-token authentication and a small RBAC-shaped authorizer: each token names a user and the rules it is allowed
 * (verbs × API groups × resources, optionally limited to namespaces). No token (or an unknown one) is a 401; a token
 * whose rules do not cover the request is a 403 worded as the real server words it.
 */
import { readFile } from 'node:fs/promises';
import { z } from '@sluice/config';
import { ApiError } from './status.ts';

export const tokenRuleSchema = z.strictObject({
  verbs: z.array(z.string().min(1)).min(1),
  /** '' is the core group; default every group. */
  apiGroups: z.array(z.string()).optional(),
  /** Plural names, `pods/status` for a subresource, '*' for all. */
  resources: z.array(z.string().min(1)).min(1),
  /** Default: every namespace and the cluster scope. */
  namespaces: z.array(z.string().min(1)).optional(),
});

export const tokenSchema = z.strictObject({
  token: z.string().min(8, 'a token has at least 8 characters'),
  user: z.string().min(1).optional(),
  groups: z.array(z.string()).optional(),
  rules: z.array(tokenRuleSchema),
});

export const tokenFileSchema = z.strictObject({ tokens: z.array(tokenSchema).min(1) });

export type TokenRule = z.infer<typeof tokenRuleSchema>;
export type TokenEntry = z.infer<typeof tokenSchema>;

/** Every verb on everything: what a generated admin token gets. */
export const ADMIN_RULES: TokenRule[] = [{ verbs: ['*'], apiGroups: ['*'], resources: ['*'] }];

export interface Request {
  verb: string;
  group: string;
  resource: string;
  subresource?: string;
  namespace: string;
  name?: string;
}

export class AuthError extends Error {}

/** Reads a token file (JSON: `{"tokens":[{"token","user","rules":[{verbs,apiGroups,resources,namespaces}]}]}`). */
export async function loadTokenFile(path: string): Promise<TokenEntry[]> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw new AuthError(`token file ${path}: ${(err as Error).message}`);
  }
  const parsed = tokenFileSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new AuthError(`token file ${path}: ${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  return parsed.data.tokens;
}

const matches = (list: string[] | undefined, value: string) => list === undefined || list.includes('*') || list.includes(value);

export class Authorizer {
  private readonly byToken = new Map<string, TokenEntry>();

  constructor(tokens: TokenEntry[]) {
    for (const t of tokens) this.byToken.set(t.token, t);
  }

  /** The user behind an Authorization header (401 when there is none or it is unknown). */
  authenticate(header: string | undefined): TokenEntry {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
    const entry = match ? this.byToken.get(match[1]!) : undefined;
    if (!entry) throw new ApiError(401, 'Unauthorized', 'Unauthorized');
    return entry;
  }

  /** 403 unless one of the token's rules covers the request. */
  authorize(entry: TokenEntry, req: Request): void {
    const resource = req.subresource ? `${req.resource}/${req.subresource}` : req.resource;
    const allowed = entry.rules.some((rule) =>
      matches(rule.verbs, req.verb) && matches(rule.apiGroups, req.group)
      && (rule.resources.includes('*') || rule.resources.includes(resource) || (!!req.subresource && rule.resources.includes(`${req.resource}/*`)))
      && (rule.namespaces === undefined || (req.namespace !== '' && rule.namespaces.includes(req.namespace))));
    if (allowed) return;
    const user = entry.user ?? 'kube-sim-user';
    const qualified = req.group ? `${req.resource}.${req.group}` : req.resource;
    const scope = req.namespace ? `in the namespace "${req.namespace}"` : 'at the cluster scope';
    const what = req.subresource ? `resource "${req.resource}/${req.subresource}"` : `resource "${req.resource}"`;
    const subject = req.name ? `${qualified} "${req.name}"` : qualified;
    throw new ApiError(403, 'Forbidden', `${subject} is forbidden: User "${user}" cannot ${req.verb} ${what} in API group "${req.group}" ${scope}`, {
      group: req.group, kind: req.resource, ...(req.name ? { name: req.name } : {}),
    });
  }
}
