export * from './lab.ts';
export { LabKubelet, webServer, WorkloadKubelet, IMAGE_WORKDIR, type Sandbox, type WorkloadContainer, type WorkloadKubeletOptions, type WorkloadNode } from './kubelet.ts';
export * from './services.ts';
