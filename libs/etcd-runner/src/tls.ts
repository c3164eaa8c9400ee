/**
 * A throw-away PKI for test and demo etcd clusters, made with the openssl CLI: one CA, one certificate per member
 * (server and peer, for 127.0.0.1 and localhost), and client certificates on demand whose CN is the etcd user (etcd's
 * --client-cert-auth takes the CN as the user name when no password token is sent).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface CertFiles {
  cert: string;
  key: string;
}

export interface EtcdTls {
  /** Folder holding every file below (inside the cluster's temporary folder; removed by stop()). */
  readonly dir: string;
  /** CA certificate (PEM file) that signed every certificate here: what a client trusts. */
  readonly ca: string;
  /** The client certificate of etcd's root user (CN=root), used by the runner itself. */
  readonly root: CertFiles;
  /** Issues (once per name) a client certificate whose CN is `user`. */
  clientCert(user: string): CertFiles;
  /** The certificate a member serves (server and peer). */
  memberCert(member: string): CertFiles;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.:@-]*$/;

/** Creates the CA in `dir` (which must exist and be private to the caller). */
export function createTestPki(dir: string): EtcdTls {
  const ca = join(dir, 'ca.crt');
  const caKey = join(dir, 'ca.key');
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', caKey, '-out', ca, '-subj', '/CN=sluice-etcd-test-ca', '-days', '7'], dir);

  const issue = (file: string, cn: string, ext: string): CertFiles => {
    if (!SAFE_NAME.test(cn)) throw new Error(`certificate name "${cn}" has characters that are not allowed`);
    const cert = join(dir, `${file}.crt`);
    const key = join(dir, `${file}.key`);
    if (existsSync(cert)) return { cert, key };
    const csr = join(dir, `${file}.csr`);
    const extFile = join(dir, `${file}.ext`);
    writeFileSync(extFile, ext, { mode: 0o600 });
    openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${cn}`], dir);
    openssl(['x509', '-req', '-in', csr, '-CA', ca, '-CAkey', caKey, '-CAcreateserial', '-out', cert, '-days', '7', '-extfile', extFile], dir);
    return { cert, key };
  };
  const clientExt = 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n';
  const tls: EtcdTls = {
    dir,
    ca,
    root: issue('client-root', 'root', clientExt),
    clientCert: (user) => issue(`client-${user.replace(/[^A-Za-z0-9_.-]/g, '_')}`, user, clientExt),
    memberCert: (member) =>
      issue(`member-${member}`, member, 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n'),
  };
  return tls;
}
