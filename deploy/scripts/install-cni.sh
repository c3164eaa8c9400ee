#!/bin/sh
# The agent DaemonSet's init step: installs the Sluice CNI plugin on the node and writes its conflist.
#
# The kubelet runs the plugin on the host, outside any container, so the plugin gets its own copy of node and of the
# project next to it (<CNI_BIN_DIR>/sluice-cni.d/), and <CNI_BIN_DIR>/sluice-cni runs it from there. A copy that is
# already the image's (same stamp) is kept. The files are hard links where the two sides share a filesystem.
#
# Environment: CNI_BIN_DIR, CNI_CONF_DIR (the host's /opt/cni/bin and /etc/cni/net.d as mounted here),
# SLUICE_AGENT_SOCKET (the agent's local API as the host sees it), SLUICE_CNI_MTU (optional).
set -eu
app=$(pwd)
bin_dir=${CNI_BIN_DIR:?CNI_BIN_DIR must name the CNI plugin directory}
conf_dir=${CNI_CONF_DIR:?CNI_CONF_DIR must name the CNI config directory}
socket=${SLUICE_AGENT_SOCKET:-/var/run/sluice/agent.sock}
node_bin=$(command -v node)

for f in package.json package-lock.json services/cni/src/main.ts; do
  [ -f "$app/$f" ] || { echo "install-cni: run from the project's root ($app has no $f)" >&2; exit 1; }
done
mkdir -p "$bin_dir" "$conf_dir"

# The node binary, the locked dependencies and the sources (contents): what the copy is made of.
stamp="$("$node_bin" --version) $(cksum <"$app/package-lock.json" | cut -d' ' -f1) $(find "$app/services/cni/src" "$app/libs" "$app/bpf/src" -name '*.ts' -not -path '*/node_modules/*' | sort | xargs cat | cksum | cut -d' ' -f1)"
dest="$bin_dir/sluice-cni.d"
if [ "$(cat "$dest/.stamp" 2>/dev/null || true)" != "$stamp" ]; then
  next="$bin_dir/.sluice-cni.d.new"
  rm -rf "$next"
  mkdir -p "$next/app"
  cp -l "$node_bin" "$next/node" 2>/dev/null || cp "$node_bin" "$next/node"
  for part in package.json node_modules libs services/cni bpf/package.json bpf/src bpf/build; do
    [ -e "$app/$part" ] || continue
    mkdir -p "$next/app/$(dirname "$part")"
    cp -al "$app/$part" "$next/app/$part" 2>/dev/null || cp -a "$app/$part" "$next/app/$part"
  done
  echo "$stamp" >"$next/.stamp"
  rm -rf "$dest.old"
  [ -e "$dest" ] && mv "$dest" "$dest.old"
  mv "$next" "$dest"
  rm -rf "$dest.old"
  echo "install-cni: copied node and the project to $dest"
else
  echo "install-cni: kept $dest (already this image's)"
fi

# The plugin finds its copy from where it is installed, so the same file works in any CNI bin dir.
cat >"$bin_dir/.sluice-cni.new" <<'WRAPPER'
#!/bin/sh
d="$(dirname "$(readlink -f "$0")")/sluice-cni.d"
exec "$d/node" --import "file://$d/app/node_modules/tsx/dist/loader.mjs" "$d/app/services/cni/src/main.ts" "$@"
WRAPPER
chmod 0755 "$bin_dir/.sluice-cni.new"
mv "$bin_dir/.sluice-cni.new" "$bin_dir/sluice-cni"

mtu=${SLUICE_CNI_MTU:+, \"mtu\": $SLUICE_CNI_MTU}
cat >"$conf_dir/.05-sluice.conflist.new" <<CONF
{
  "cniVersion": "1.0.0",
  "name": "sluice",
  "plugins": [
    { "type": "sluice-cni", "agentSocket": "$socket"$mtu, "ipam": { "dataDir": "/var/lib/sluice-cni" } }
  ]
}
CONF
mv "$conf_dir/.05-sluice.conflist.new" "$conf_dir/05-sluice.conflist"
echo "install-cni: $bin_dir/sluice-cni and $conf_dir/05-sluice.conflist"
