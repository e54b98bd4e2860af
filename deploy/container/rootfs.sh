#!/bin/sh
# Lays out the final image's root filesystem in OUT: the exporter (stripped), the CA bundle, a
# passwd/group entry for the non-root user and its empty home.
#   rootfs.sh BINARY CA_BUNDLE OUT
# The Dockerfile's builder stage runs it; so does .ci/run on a binary built on the host, and
# hands OUT to `buildah build --build-context builder=OUT` in place of that stage.
set -eu
binary=$1
ca_bundle=$2
out=$3
uid=65534

rm -rf "$out"
mkdir -p "$out/etc/ssl/certs" "$out/home/exporter" "$out/etc/aws-cost-exporter"
strip -o "$out/aws-cost-exporter" "$binary"
chmod 0755 "$out/aws-cost-exporter"
cp "$ca_bundle" "$out/etc/ssl/certs/ca-certificates.crt"
chmod 0644 "$out/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nexporter:x:%s:%s:aws-cost-exporter:/home/exporter:/sbin/nologin\n' "$uid" "$uid" >"$out/etc/passwd"
printf 'root:x:0:\nexporter:x:%s:\n' "$uid" >"$out/etc/group"
chown -R "$uid:$uid" "$out/home/exporter"
