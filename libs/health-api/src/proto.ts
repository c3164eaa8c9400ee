/**
 * The one package definition of the health API. The server, the clients and server reflection all use it, so that
 * reflection lists exactly the services the server answers: sluice.health.v1.ClusterHealth, grpc.health.v1.Health and
 * the reflection services themselves.
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const require = createRequire(import.meta.url);

/** The workspace's top-level proto folder (repo/proto). */
export const PROTO_ROOT = fileURLToPath(new URL('../../../proto/', import.meta.url));
export const HEALTH_PROTO = 'sluice/health/v1/health.proto';
export const SERVICE_NAME = 'sluice.health.v1.ClusterHealth';
export const GRPC_HEALTH_SERVICE = 'grpc.health.v1.Health';

const grpcHealthProto: string = (require('grpc-health-check') as { protoPath: string }).protoPath;
const reflectionProtoRoot = join(dirname(require.resolve('@grpc/reflection/package.json')), 'build/proto');

/** Field conversion shared by everyone: camelCase names, int64 as number, enums as their names, defaults filled in. */
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  arrays: true,
  oneofs: true,
};

export const packageDefinition: protoLoader.PackageDefinition = protoLoader.loadSync(
  [join(PROTO_ROOT, HEALTH_PROTO), grpcHealthProto, join(reflectionProtoRoot, 'grpc/reflection/v1/reflection.proto'), join(reflectionProtoRoot, 'grpc/reflection/v1alpha/reflection.proto')],
  { ...LOADER_OPTIONS, includeDirs: [PROTO_ROOT, reflectionProtoRoot] },
);

const loaded = grpc.loadPackageDefinition(packageDefinition) as unknown as {
  sluice: { health: { v1: { ClusterHealth: grpc.ServiceClientConstructor } } };
};

export const ClusterHealthClient: grpc.ServiceClientConstructor = loaded.sluice.health.v1.ClusterHealth;
/** The service definition to pass to `server.addService`. */
export const clusterHealthService: grpc.ServiceDefinition = ClusterHealthClient.service;
