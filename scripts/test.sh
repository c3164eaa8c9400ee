#!/usr/bin/env bash
# Every test: the type check, the lint, then each package's vitest suite through Nx, then one closing line that counts them.
set -uo pipefail
cd "$(dirname "$0")/.."
export NX_DAEMON=false NX_NO_CLOUD=true NX_TUI=false FORCE_COLOR=0
rm -rf test-results && mkdir -p test-results

# What the tests make must not outlive them; what existed before (a running demo) is not theirs.
snapshot() {
  {
    ip netns list 2>/dev/null | awk '$1 ~ /^sl-/ {print "netns " $1}'
    find /sys/fs/bpf/sluice -mindepth 1 -maxdepth 1 2>/dev/null | sed 's/^/pin /'
    find /dev/shm /tmp -maxdepth 1 -name 'sluice-etcd-*' 2>/dev/null | sed 's/^/etcd data dir /'
  } | sort
}
before=$(snapshot)

echo "== typecheck"
npx tsc -p tsconfig.json --noEmit
typecheck=$?

# The few rules that catch real bugs (eslint.config.js): floating promises, unused variables and imports.
echo "== lint"
npx eslint .
lint=$?

echo "== tests"
npx nx run-many -t test --parallel="${SLUICE_TEST_PARALLEL:-2}" --output-style=stream "$@"
tests=$?

node scripts/test-summary.mjs test-results
summary=$?

left=$(comm -13 <(echo "$before") <(snapshot) | grep -v '^$' || true)
leftovers=0
if [[ -n "$left" ]]; then
  leftovers=1
  echo "the tests left these behind:"; echo "$left"
fi

((typecheck == 0 && lint == 0 && tests == 0 && summary == 0 && leftovers == 0))
