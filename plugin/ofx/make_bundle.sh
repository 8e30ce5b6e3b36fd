#!/usr/bin/env bash
# Assembles the OpenFX bundle from a build: lct.ofx (this crate's cdylib) and the lct plugin it
# runs, side by side in Contents/Linux-x86-64/.
#
#   cargo build --release -p lct-plugin -p lct-ofx && plugin/ofx/make_bundle.sh
#   plugin/ofx/make_bundle.sh [PROFILE_DIR (target/release)] [BUNDLE (PROFILE_DIR/lct.ofx.bundle)]
#
# Refuses to replace an existing bundle's files unless --force is given first.
set -euo pipefail
force=0
if [ "${1:-}" = "--force" ]; then force=1; shift; fi
root="$(cd "$(dirname "$0")/../.." && pwd)"
profile_dir="${1:-$root/target/release}"
bundle="${2:-$profile_dir/lct.ofx.bundle}"
for file in liblct_ofx.so liblct_plugin.so; do
  if [ ! -f "$profile_dir/$file" ]; then
    echo "error: $profile_dir/$file not found; build it first: cargo build --release -p lct-plugin -p lct-ofx" >&2
    exit 1
  fi
done
contents="$bundle/Contents/Linux-x86-64"
if [ -e "$contents/lct.ofx" ] && [ "$force" = 0 ]; then
  echo "error: $contents/lct.ofx exists; pass --force to replace it" >&2
  exit 1
fi
mkdir -p "$contents"
cp "$profile_dir/liblct_ofx.so" "$contents/lct.ofx.tmp" && mv "$contents/lct.ofx.tmp" "$contents/lct.ofx"
cp "$profile_dir/liblct_plugin.so" "$contents/liblct_plugin.so.tmp" && mv "$contents/liblct_plugin.so.tmp" "$contents/liblct_plugin.so"
echo "$bundle"
