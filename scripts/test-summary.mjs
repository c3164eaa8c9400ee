// Adds up the JSON reports that every package's vitest run wrote and prints one closing line for the whole suite.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.argv[2] ?? 'test-results';
let passed = 0, failed = 0, skipped = 0;
const failures = [];
for (const file of readdirSync(dir).filter((f) => f.endsWith('.json'))) {
  const report = JSON.parse(readFileSync(join(dir, file), 'utf8'));
  passed += report.numPassedTests ?? 0;
  failed += (report.numFailedTests ?? 0);
  skipped += (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
  if (!report.success && (report.numFailedTests ?? 0) === 0) failures.push(`${file}: a suite failed to load`);
  for (const suite of report.testResults ?? []) {
    for (const test of suite.assertionResults ?? []) if (test.status === 'failed') failures.push(`${file}: ${test.fullName}`);
  }
}
for (const failure of failures) console.log(`FAILED ${failure}`);
const suiteErrors = failures.length - failed;
console.log(`${passed} passed, ${failed + Math.max(0, suiteErrors)} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failures.length || failed || passed === 0 ? 1 : 0);
