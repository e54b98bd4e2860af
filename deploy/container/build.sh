#!/bin/sh
# The static (musl) release binary for ARCH (amd64, arm64), with the toolchain of toolchain.sh
# and .cargo/config.toml; with OUT, also the image's root filesystem there (rootfs.sh).
#   build.sh ARCH [OUT]     (run at the repository's root)
# Prints the binary's path last. The Dockerfile's builder stage runs it for its TARGETARCH;
# .ci/run for both architectures, and hands the binaries to tests/e2e/run.sh.
set -eu
arch=$1
case "$arch" in
amd64) gnu=x86_64-linux-gnu rust=x86_64-unknown-linux-musl ;;
arm64) gnu=aarch64-linux-gnu rust=aarch64-unknown-linux-musl ;;
*) echo "build.sh: unsupported architecture $arch (amd64, arm64)" >&2; exit 2 ;;
esac
cargo build --release --locked --target "$rust"
binary="${CARGO_TARGET_DIR:-target}/$rust/release/aws-cost-exporter"
if [ "$#" -ge 2 ]; then
  STRIP="${gnu}-strip" sh "$(dirname "$0")/rootfs.sh" "$binary" /etc/ssl/certs/ca-certificates.crt "$2"
fi
echo "$binary"
