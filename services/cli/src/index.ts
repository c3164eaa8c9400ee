export { runCli, buildProgram, processIo, type Io } from './cli.ts';
export { gatherStatus, failed, type StatusReport, type Section, type Level } from './status.ts';
export { renderStatus, renderTable } from './render.ts';
export { resolveTarget, type Target, type GlobalOptions } from './target.ts';
export { planTests, runTests, runProbe, renderResult, renderSummary, type PlannedTest, type TestResult, type Probe, type ProbeRunner } from './connectivity.ts';
export { CliError } from './errors.ts';
