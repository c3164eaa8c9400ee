/** The scenario file: the same knobs as the flags (flags win), plus explicit nodes and services, validated with zod. */
import { readFile } from 'node:fs/promises';
import { schemas, z } from '@sluice/config';

const cidr = z.string().regex(/^(\d{1,3}\.){3}\d{1,3}\/\d{1,2}$/, 'expected an IPv4 CIDR like 10.128.0.0/9');
const labels = z.record(z.string(), z.string());

export const scenarioSchema = z.strictObject({
  nodes: z.number().int().min(0).optional(),
  podsPerNode: z.number().int().min(0).optional(),
  services: z.number().int().min(0).optional(),
  namespaces: z.number().int().min(1).optional(),
  emptyNodes: z.number().int().min(0).optional(),
  clusterCIDR: cidr.optional(),
  nodeCIDRMaskSize: z.number().int().min(8).max(30).optional(),
  nodeIPCIDR: cidr.optional(),
  heartbeatInterval: schemas.duration.optional(),
  heartbeatJitter: z.number().min(0).max(1).optional(),
  /** node-status: a Node status PATCH per heartbeat (pre-NodeLease); lease: KEP-589 Leases, Node status every 5 min. */
  heartbeat: z.enum(['node-status', 'lease']).optional(),
  nodeStatusReportInterval: schemas.duration.optional(),
  /** Pods the simulation creates start Pending and run with an IP after this delay (0: created Running). */
  podStartDelay: schemas.duration.optional(),
  churnPerSecond: z.number().min(0).optional(),
  seed: z.number().int().optional(),
  windowEvents: z.number().int().min(1).optional(),
  bookmarkInterval: schemas.duration.optional(),
  rateLimit: z.strictObject({ qps: z.number().positive(), burst: z.number().int().positive(), retryAfterSeconds: z.number().int().min(0).optional() }).optional(),
  failureRate: z.number().min(0).max(1).optional(),
  nodeList: z.array(z.strictObject({ name: z.string().min(1), labels: labels.optional(), pods: z.number().int().min(0).optional(), heartbeat: z.boolean().optional() })).optional(),
  serviceList: z.array(z.strictObject({
    namespace: z.string().optional(), name: z.string().min(1), selector: labels.optional(),
    ports: z.array(z.strictObject({ name: z.string().optional(), port: z.number().int().min(1).max(65535), targetPort: z.number().int().min(1).max(65535).optional() })).optional(),
  })).optional(),
});

export type Scenario = z.infer<typeof scenarioSchema>;

export class ScenarioError extends Error {}

export async function loadScenario(path: string): Promise<Scenario> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new ScenarioError(`cannot read scenario ${path}: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ScenarioError(`scenario ${path} is not JSON: ${(err as Error).message}`);
  }
  const result = scenarioSchema.safeParse(json);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new ScenarioError(`scenario ${path}: ${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  return result.data;
}
