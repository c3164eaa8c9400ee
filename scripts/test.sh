#!/usr/bin/env bash
# Every test: the type check, then each package's vitest suite through Nx, then one closing line that counts them.
set -uo pipefail
cd "$(dirname "$0")/.."
export NX_DAEMON=false NX_NO_CLOUD=true NX_TUI=false FORCE_COLOR=0
rm -rf test-results && mkdir -p test-results

echo "== typecheck"
npx tsc -p tsconfig.json --noEmit
typecheck=$?

echo "== tests"
npx nx run-many -t test --parallel="${SLUICE_TEST_PARALLEL:-2}" --output-style=stream "$@"
tests=$?

node scripts/test-summary.mjs test-results
summary=$?

# Nothing the tests made may outlive them.
leftovers=$(ip netns list 2>/dev/null | grep -c '^sl-' || true)
if ((leftovers)); then echo "leftover network namespaces from the tests: $(ip netns list | grep '^sl-' | tr '\n' ' ')"; fi
pins=$(find /sys/fs/bpf/sluice -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
if ((pins)); then echo "leftover bpffs pins from the tests: $(find /sys/fs/bpf/sluice -mindepth 1 -maxdepth 1 | tr '\n' ' ')"; leftovers=$((leftovers + pins)); fi

((typecheck == 0 && tests == 0 && summary == 0 && leftovers == 0))
