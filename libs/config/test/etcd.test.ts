import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Command, ConfigError, etcdFlags, etcdFlagShape, resolveEtcdConfig, validate, z } from '../src/index.ts';

const dir = mkdtempSync(join(tmpdir(), 'sluice-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const file = (name: string, text: string) => {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
};

function parse(argv: string[]) {
  const program = new Command('t').exitOverride();
  for (const o of etcdFlags()) program.addOption(o);
  program.parse(argv, { from: 'user' });
  return resolveEtcdConfig(validate(z.object(etcdFlagShape), program.opts()));
}

describe('etcd client configuration', () => {
  file('ca.pem', 'CA');
  file('cert.pem', 'CERT');
  file('key.pem', 'KEY');
  file('password', 'secret\nignored second line\n');

  it('reads an etcd.config file like Cilium\'s, with paths relative to it', () => {
    const config = file('etcd.config', 'endpoints:\n  - https://10.0.0.1:2379\n  - https://10.0.0.2:2379\ntrusted-ca-file: ca.pem\ncert-file: cert.pem\nkey-file: key.pem\n');
    const etcd = parse(['--etcd-config', config]);
    expect(etcd.client.endpoints).toEqual(['https://10.0.0.1:2379', 'https://10.0.0.2:2379']);
    expect(etcd.client.tls?.ca?.toString()).toBe('CA');
    expect(etcd.client.tls?.cert?.toString()).toBe('CERT');
    expect(etcd.client.tls?.key?.toString()).toBe('KEY');
    expect(etcd.client.auth).toBeUndefined();
    expect(etcd.prefix).toBe('sluice/');
  });

  it('lets each flag override the file\'s field', () => {
    const config = file('etcd2.config', 'endpoints: https://10.0.0.1:2379\ntrusted-ca-file: ca.pem\nusername: from-file\npassword: file-pw\n');
    const etcd = parse(['--etcd-config', config, '--etcd-endpoints', 'https://127.0.0.1:1,https://127.0.0.1:2', '--etcd-username', 'op', '--etcd-password-file', join(dir, 'password'), '--etcd-prefix', 'x/']);
    expect(etcd.client.endpoints).toEqual(['https://127.0.0.1:1', 'https://127.0.0.1:2']);
    expect(etcd.client.auth).toEqual({ username: 'op', password: 'secret' });
    expect(etcd.prefix).toBe('x/');
    expect(parse(['--etcd-config', config]).client.auth).toEqual({ username: 'from-file', password: 'file-pw' });
  });

  it('takes plain flags without a file, TLS only for https', () => {
    const plain = parse(['--etcd-endpoints', 'http://127.0.0.1:2379']);
    expect(plain.client).toEqual({ endpoints: ['http://127.0.0.1:2379'] });
    const tls = parse(['--etcd-endpoints', 'https://127.0.0.1:2379', '--etcd-ca-file', join(dir, 'ca.pem'), '--etcd-cert-file', join(dir, 'cert.pem'), '--etcd-key-file', join(dir, 'key.pem')]);
    expect(tls.client.tls?.cert?.toString()).toBe('CERT');
    expect(tls.describe).toMatchObject({ tls: true, clientCert: true });
  });

  it('names the flag at fault', () => {
    expect(() => parse([])).toThrow(/--etcd-endpoints: needs at least one endpoint/);
    expect(() => parse(['--etcd-endpoints', 'https://a:1', '--etcd-cert-file', join(dir, 'cert.pem')])).toThrow(/--etcd-key-file/);
    expect(() => parse(['--etcd-endpoints', 'http://a:1', '--etcd-ca-file', join(dir, 'ca.pem')])).toThrow(/no endpoint is https/);
    expect(() => parse(['--etcd-endpoints', 'https://a:1', '--etcd-ca-file', join(dir, 'missing.pem')])).toThrow(/--etcd-ca-file: cannot read .*ENOENT/);
    expect(() => parse(['--etcd-endpoints', 'https://a:1', '--etcd-username', 'u'])).toThrow(/--etcd-username: needs --etcd-password-file/);
    expect(() => parse(['--etcd-config', file('bad.config', 'endpoint: http://a:1\n')])).toThrow(ConfigError);
    expect(() => parse(['--etcd-config', file('bad2.config', 'endpoints: [ftp://a:1]\n')])).toThrow(/--etcd-config: .*endpoints/);
    expect(() => parse(['--etcd-config', join(dir, 'nope')])).toThrow(/--etcd-config: cannot read/);
    expect(() => validate(z.object(etcdFlagShape), { etcdEndpoints: 'localhost:2379', etcdPrefix: 'sluice/' })).toThrow(/--etcd-endpoints: must start with http/);
  });
});
