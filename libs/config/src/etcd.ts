/**
 * The one etcd client configuration of every Sluice binary: a file like Cilium's `etcd.config` and the same flags
 * everywhere, each flag overriding the file's field of the same meaning.
 *
 *   --etcd-config <file>        YAML: endpoints, trusted-ca-file, cert-file, key-file, username, password(-file)
 *   --etcd-endpoints <urls>     comma-separated http(s) URLs
 *   --etcd-ca-file <file>       CA bundle that signed etcd's server certificates (PEM)
 *   --etcd-cert-file <file>     client certificate for mutual TLS (PEM); its CN is the etcd user under --client-cert-auth
 *   --etcd-key-file <file>      the client certificate's private key (PEM)
 *   --etcd-username <name>      etcd user (password authentication)
 *   --etcd-password-file <file> the user's password, first line of the file (never a flag: it would show in ps)
 *   --etcd-prefix <prefix>      root of Sluice's keys (default sluice/)
 *
 * Relative paths inside the file are relative to the file's folder, as a mounted Secret next to it would be.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigError, flag, type Option } from './index.ts';

/** What createKvClient (libs/kvstore) takes, file contents already read. */
export interface EtcdClientConfig {
  endpoints: string[];
  /** Set when any endpoint is https or a CA/certificate is given. */
  tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer };
  auth?: { username: string; password: string };
}

export interface EtcdConfig {
  client: EtcdClientConfig;
  /** Root prefix of Sluice's keys, ending in `/`. */
  prefix: string;
  /** Where each setting came from, for the start-up log (no secrets). */
  describe: { endpoints: string[]; tls: boolean; clientCert: boolean; username?: string; configFile?: string };
}

export interface EtcdFlagOptions {
  /** Extra text after the --etcd-endpoints description (e.g. the CLI's demo fallback). */
  endpointsNote?: string;
}

/** The etcd flags, the same in every binary. Add them with `for (const o of etcdFlags()) program.addOption(o)`. */
export function etcdFlags(options: EtcdFlagOptions = {}): Option[] {
  return [
    flag('--etcd-config <file>', 'etcd client configuration file (YAML, like Cilium\'s etcd.config: endpoints, trusted-ca-file, cert-file, key-file, username, password-file)'),
    flag('--etcd-endpoints <urls>', `etcd client URLs, comma-separated (https:// for TLS)${options.endpointsNote ? `; ${options.endpointsNote}` : ''}`),
    flag('--etcd-ca-file <file>', 'CA bundle of etcd\'s server certificates (PEM)'),
    flag('--etcd-cert-file <file>', 'client certificate for mutual TLS with etcd (PEM; its CN is the etcd user when etcd runs --client-cert-auth)'),
    flag('--etcd-key-file <file>', 'private key of --etcd-cert-file (PEM)'),
    flag('--etcd-username <name>', 'etcd user for password authentication'),
    flag('--etcd-password-file <file>', 'file holding the etcd user\'s password (first line)'),
    flag('--etcd-prefix <prefix>', 'root prefix of Sluice\'s keys in etcd', 'sluice/'),
  ];
}

const endpointList = z
  .union([z.string(), z.array(z.string())])
  .transform((v) => (Array.isArray(v) ? v : v.split(',')).map((s) => s.trim()).filter(Boolean))
  .pipe(z.array(z.string().url().regex(/^https?:\/\//, 'must start with http:// or https://')));

/** The zod shape of the etcd flags; spread it into a binary's option schema. */
export const etcdFlagShape = {
  etcdConfig: z.string().min(1).optional(),
  etcdEndpoints: endpointList.optional(),
  etcdCaFile: z.string().min(1).optional(),
  etcdCertFile: z.string().min(1).optional(),
  etcdKeyFile: z.string().min(1).optional(),
  etcdUsername: z.string().min(1).optional(),
  etcdPasswordFile: z.string().min(1).optional(),
  etcdPrefix: z.string().regex(/^[^/].*\/$/, 'must be non-empty and end with "/"'),
};
export type EtcdFlagValues = z.infer<z.ZodObject<typeof etcdFlagShape>>;

const fileSchema = z
  .object({
    endpoints: endpointList.optional(),
    'trusted-ca-file': z.string().min(1).optional(),
    'cert-file': z.string().min(1).optional(),
    'key-file': z.string().min(1).optional(),
    username: z.string().min(1).optional(),
    password: z.string().optional(),
    'password-file': z.string().min(1).optional(),
  })
  .strict();

function readConfigFile(file: string): z.infer<typeof fileSchema> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`invalid --etcd-config: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = parseYaml(text);
  } catch (err) {
    throw new ConfigError(`invalid --etcd-config: ${file} is not YAML: ${(err as Error).message.split('\n')[0]}`);
  }
  const result = fileSchema.safeParse(parsed ?? {});
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new ConfigError(`invalid --etcd-config: ${file}: ${issue.path.join('.') || 'file'}: ${issue.message}`);
  }
  const base = dirname(file);
  const rel = (p: string | undefined) => (p === undefined ? undefined : resolve(base, p));
  return { ...result.data, 'trusted-ca-file': rel(result.data['trusted-ca-file']), 'cert-file': rel(result.data['cert-file']), 'key-file': rel(result.data['key-file']), 'password-file': rel(result.data['password-file']) };
}

function readFlagFile(flagName: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new ConfigError(`invalid ${flagName}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

export interface ResolveEtcdOptions {
  /** The CLI may run without endpoints (it then asks the demo's state file). */
  endpointsOptional?: boolean;
}

/**
 * Merges --etcd-config with the individual flags (a flag wins over the file's field) and reads the files it names.
 * Throws ConfigError naming the flag at fault.
 */
export function resolveEtcdConfig(values: EtcdFlagValues, options: ResolveEtcdOptions = {}): EtcdConfig {
  const file = values.etcdConfig ? readConfigFile(values.etcdConfig) : {};
  const endpoints = values.etcdEndpoints ?? file.endpoints ?? [];
  if (endpoints.length === 0 && !options.endpointsOptional) throw new ConfigError('invalid --etcd-endpoints: needs at least one endpoint (or --etcd-config with endpoints)');
  const caFile = values.etcdCaFile ?? file['trusted-ca-file'];
  const certFile = values.etcdCertFile ?? file['cert-file'];
  const keyFile = values.etcdKeyFile ?? file['key-file'];
  if (!!certFile !== !!keyFile) throw new ConfigError(`invalid --etcd-${certFile ? 'key' : 'cert'}-file: a client certificate needs both --etcd-cert-file and --etcd-key-file`);
  const https = endpoints.some((e) => e.startsWith('https://'));
  if ((caFile || certFile) && endpoints.length > 0 && !https) throw new ConfigError('invalid --etcd-endpoints: TLS files are given but no endpoint is https://');
  if (https && endpoints.some((e) => e.startsWith('http://'))) throw new ConfigError('invalid --etcd-endpoints: mixes http:// and https://');
  const username = values.etcdUsername ?? file.username;
  const passwordFile = values.etcdPasswordFile ?? file['password-file'];
  let password: string | undefined = values.etcdPasswordFile ? undefined : file.password;
  if (passwordFile) password = readFlagFile('--etcd-password-file', passwordFile).toString('utf8').split(/\r?\n/)[0]!;
  if (username && password === undefined) throw new ConfigError('invalid --etcd-username: needs --etcd-password-file (or password in --etcd-config)');
  if (!username && password !== undefined) throw new ConfigError('invalid --etcd-password-file: needs --etcd-username');

  const client: EtcdClientConfig = { endpoints };
  if (https || caFile || certFile) {
    client.tls = {
      ...(caFile ? { ca: readFlagFile('--etcd-ca-file', caFile) } : {}),
      ...(certFile ? { cert: readFlagFile('--etcd-cert-file', certFile), key: readFlagFile('--etcd-key-file', keyFile!) } : {}),
    };
  }
  if (username) client.auth = { username, password: password! };
  return {
    client,
    prefix: values.etcdPrefix,
    describe: { endpoints, tls: !!client.tls, clientCert: !!certFile, ...(username ? { username } : {}), ...(values.etcdConfig ? { configFile: values.etcdConfig } : {}) },
  };
}
