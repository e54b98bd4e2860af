#!/bin/sh
# Installs what the static (musl) release build needs on a Debian host (bookworm), for each
# architecture given (amd64, arm64), natively or across: that architecture's GCC and binutils
# (the C code of aws-lc-sys and ring, the link, strip) and its musl-dev (adding the architecture
# to dpkg when it is not the host's), the CA bundle, and the Rust target (rustup).
# .cargo/config.toml points cargo at them.
#   toolchain.sh ARCH...
# The Dockerfile's builder stage runs it for its TARGETARCH; .ci/run for both.
set -eu
[ "$#" -gt 0 ] || { echo "usage: toolchain.sh ARCH... (amd64, arm64)" >&2; exit 2; }
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
host=$(dpkg --print-architecture)
packages="ca-certificates"
targets=""
for arch in "$@"; do
  case "$arch" in
  amd64) gnu=x86_64-linux-gnu cross=gcc-x86-64-linux-gnu rust=x86_64-unknown-linux-musl ;;
  arm64) gnu=aarch64-linux-gnu cross=gcc-aarch64-linux-gnu rust=aarch64-unknown-linux-musl ;;
  *) echo "toolchain.sh: unsupported architecture $arch (amd64, arm64)" >&2; exit 2 ;;
  esac
  if [ "$arch" = "$host" ]; then
    packages="$packages gcc binutils musl-dev"
  else
    dpkg --print-foreign-architectures | grep -qx "$arch" || $sudo dpkg --add-architecture "$arch"
    packages="$packages $cross musl-dev:$arch"
  fi
  targets="$targets $rust"
  echo "toolchain.sh: $rust with ${gnu}-gcc and musl-dev:$arch"
done
# Versions follow the host's Debian release.
$sudo apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $packages >/dev/null
# shellcheck disable=SC2086
rustup target add $targets
