#!/usr/bin/env bash
# Installs what Sluice needs on a fresh machine, once and quietly: Debian packages, node_modules, the bpffs, the
# services compiled as deploy/ runs them (services/*/dist) and the BPF objects. Run by `npm start`, `npm test`,
# `npm run bench` and `.ci/run`; under 2 s when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

# prometheus: for promtool (test/deploy checks every component's /metrics with `promtool check metrics`).
# iperf3, sockperf: the host-routing bench (pod → remote pod throughput and TCP request/response latency).
PACKAGES=(clang llvm libbpf-dev bpftool etcd-server etcd-client iptables iputils-ping iputils-arping iproute2 curl make linux-libc-dev prometheus iperf3 sockperf)
say() { printf 'bootstrap: %s\n' "$*" >&2; }

missing=()
while read -r name status; do
  [[ "$status" == ii* ]] || missing+=("$name")
done < <(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${PACKAGES[@]}" 2>/dev/null || true)
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null | grep -q '^ii' || [[ " ${missing[*]:-} " == *" $pkg "* ]] || missing+=("$pkg")
done

if ((${#missing[@]})); then
  if ((EUID != 0)); then
    say "missing Debian packages: ${missing[*]}"
    say "run as root, or install them: sudo apt-get install -y ${missing[*]}"
    exit 1
  fi
  say "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

lock_hash=$(sha256sum package-lock.json | cut -d' ' -f1)
stamp=node_modules/.sluice-lock.sha256
if [[ ! -d node_modules || ! -f "$stamp" || "$(cat "$stamp")" != "$lock_hash" ]]; then
  say "installing npm dependencies"
  # `npm ci`: exactly the lockfile, never rewriting it. The lockfile lists every platform's nx binary (optional
  # dependencies, each with its os/cpu), so npm ci accepts it on any machine and installs only this platform's.
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
  echo "$lock_hash" >"$stamp"
fi

if ! mountpoint -q /sys/fs/bpf 2>/dev/null; then
  if ((EUID != 0)); then
    say "the bpffs is not mounted at /sys/fs/bpf; as root: mount -t bpf bpf /sys/fs/bpf"
    exit 1
  fi
  mount -t bpf bpf /sys/fs/bpf
fi

# Rebuilds only what changed since the last build.
node scripts/build-services.mjs

if [[ -f bpf/Makefile ]]; then
  make -s -C bpf >/dev/null
fi
