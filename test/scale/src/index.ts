/**
 * @sluice/scale: the scale harness as a library (the CLI is src/main.ts).
 *   const results = await runScale(resolveScenario({ ...SMOKE }), { outDir, progress });
 *   await writeReport(results, outDir);   // report.md + SVG plots; results.json is written by runScale
 */
export { runScale, type RunOptions } from './harness.ts';
export { writeReport, goals, type Goal } from './report.ts';
export { resolveScenario, scenarioSchema, loadScenarioFile, ScenarioError, SMOKE, type Scenario, type ScenarioInput } from './scenario.ts';
export type { Results, SeriesPoint } from './results.ts';
