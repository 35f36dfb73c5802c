#!/usr/bin/env bash
# Rebuilds control/src/apiserver/protobuf/kubernetes.fds from Kubernetes' generated.proto files, as
# the crates.io crate k8s-rs-pb publishes them (Apache-2.0, the Kubernetes Authors).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version="${K8S_RS_PB_VERSION:-0.5.0}"
api="${KUBERNETES_API:-v1_33}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Fetched by cargo (which knows the registry and its mirrors), unpacked from cargo's cache.
mkdir -p "$work/fetch/src" && touch "$work/fetch/src/lib.rs"
printf '[package]\nname = "fetch"\nversion = "0.0.0"\nedition = "2024"\n[dependencies]\nk8s-rs-pb = "=%s"\n' "$version" \
  > "$work/fetch/Cargo.toml"
cargo fetch --manifest-path "$work/fetch/Cargo.toml" >/dev/null
crate="$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"k8s-rs-pb-$version.crate" | head -1)"
tar -xzf "$crate" -C "$work"
cargo run --release --manifest-path "$here/Cargo.toml" -- \
  "$work/k8s-rs-pb-$version/src/$api" "$here/../../control/src/apiserver/protobuf/kubernetes.fds"
