#!/bin/sh
# Lays out the final image's root filesystem in OUT: the exporter (stripped), the CA bundle, a
# passwd/group entry for the non-root user and its empty home.
#   rootfs.sh BINARY CA_BUNDLE OUT
# BINARY is amd64 or arm64 (static, musl), stripped with that architecture's binutils
# (x86_64-linux-gnu-strip, aarch64-linux-gnu-strip; STRIP overrides).
# The Dockerfile's builder stage runs it (through build.sh); so does tests/e2e/run.sh on the
# binaries built on the host, and hands OUT to `buildah build --build-context builder=OUT` in
# place of that stage.
set -eu
binary=$1
ca_bundle=$2
out=$3
uid=65534

rm -rf "$out"
mkdir -p "$out/etc/ssl/certs" "$out/home/exporter" "$out/etc/aws-cost-exporter"
strip=${STRIP:-}
if [ -z "$strip" ]; then
  # The ELF header's e_machine (little-endian, 16 bits at offset 18): 62 x86-64, 183 AArch64.
  case "$(od -An -tu2 -j18 -N2 "$binary" | tr -d ' ')" in
  62) strip=x86_64-linux-gnu-strip ;;
  183) strip=aarch64-linux-gnu-strip ;;
  *) echo "rootfs.sh: $binary is neither an x86-64 nor an AArch64 ELF" >&2; exit 1 ;;
  esac
fi
"$strip" -o "$out/aws-cost-exporter" "$binary"
chmod 0755 "$out/aws-cost-exporter"
cp "$ca_bundle" "$out/etc/ssl/certs/ca-certificates.crt"
chmod 0644 "$out/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nexporter:x:%s:%s:aws-cost-exporter:/home/exporter:/sbin/nologin\n' "$uid" "$uid" >"$out/etc/passwd"
printf 'root:x:0:\nexporter:x:%s:\n' "$uid" >"$out/etc/group"
chown -R "$uid:$uid" "$out/home/exporter"
