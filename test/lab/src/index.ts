export * from './lab.ts';
export { LabKubelet, webServer, type Sandbox } from './kubelet.ts';
export * from './services.ts';
