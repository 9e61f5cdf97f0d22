#!/usr/bin/env bash
# Builds the release binaries and test binaries and packs them for the device.
set -euo pipefail
cd "$(dirname "$0")/../../.."
cargo build --release --bins --benches -q
cargo test --release --workspace --no-run 2>&1 | grep Executable | sed 's/.*(//;s/)//' > /tmp/testbins.txt
rm -rf .gpu/bin && mkdir -p .gpu/bin
for f in $(cat /tmp/testbins.txt); do
  b=$(basename "$f"); n=${b%-*}
  # The kernels', graph's and models' tests; not the CLI's, the data's or the
  # ones that run no kernel.
  case $n in unravel|unravel_train|unravel_dev|xtask|cli_*|data|parameter_counts|schedule|paths|shaders_validate) continue;; esac
  cp "$f" .gpu/bin/t_$n
done
cp "$(ls -t target/release/deps/kernels-* | grep -v '\.d$' | head -1)" .gpu/bin/kernels_bench
cp target/release/unravel .gpu/bin/
strip .gpu/bin/*
(cd .gpu && tar cJf bin.tar.xz bin && rm -rf bin)
ls -la .gpu/bin.tar.xz
