# aws-cost-exporter: a static (musl) binary on an empty image, for amd64 and arm64.
#
#   podman build -t aws-cost-exporter .            # or: docker build, buildah build
#   podman run --rm -p 10067:10067 aws-cost-exporter --demo
#   buildah build --platform linux/arm64 --manifest aws-cost-exporter .   # per platform
#     (buildah 1.28, Debian bookworm's, also needs --build-arg BUILDPLATFORM=linux/amd64)
#
# The builder stage runs on the build machine's platform and compiles the release binary for
# the target's (natively or across, never emulated) with the same two scripts CI runs on its
# host: deploy/container/toolchain.sh (Debian's GCC and musl-dev for the target architecture,
# the Rust target; see .cargo/config.toml) and deploy/container/build.sh (cargo build, then
# rootfs.sh lays out the final root filesystem). The final stage is that filesystem on
# `scratch`: no shell, no package manager, a non-root user. CI builds the final stage from the
# binaries built on its host (`buildah build --build-context builder=DIR --target runtime`, see
# tests/e2e/run.sh), since base images cannot be pulled there; RUST_IMAGE names another base
# (a Debian with rustup and cargo on PATH).

ARG RUST_VERSION=1.95
ARG RUST_IMAGE=docker.io/library/rust:${RUST_VERSION}-slim-bookworm

FROM --platform=$BUILDPLATFORM ${RUST_IMAGE} AS builder
ARG TARGETARCH
WORKDIR /src
COPY deploy/container/toolchain.sh deploy/container/toolchain.sh
RUN sh deploy/container/toolchain.sh "${TARGETARCH}" \
 && rm -rf /var/lib/apt/lists/*
COPY . .
# build.rs records the revision for aws_cost_exporter_build_info (the context has no .git).
ARG REVISION=unknown
RUN AWS_COST_EXPORTER_REVISION="${REVISION}" sh deploy/container/build.sh "${TARGETARCH}" /out

FROM scratch AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/aws-cost-exporter/aws-cost-exporter
# URL and DOCUMENTATION: the source's by default. CREATED: RFC 3339, e.g. $(date -u +%FT%TZ).
ARG URL=${SOURCE}
ARG DOCUMENTATION=${SOURCE}
ARG CREATED=unknown
LABEL org.opencontainers.image.title="aws-cost-exporter" \
      org.opencontainers.image.description="Prometheus exporter for AWS Cost Explorer" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.url="${URL}" \
      org.opencontainers.image.documentation="${DOCUMENTATION}" \
      org.opencontainers.image.created="${CREATED}"
COPY --from=builder /out/ /
# HOME: the AWS SDK looks for ~/.aws/credentials and ~/.aws/config there (mount a profile at
# /home/exporter/.aws, or point AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE elsewhere).
# IRSA's AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE and the AWS_* key variables are read as
# set by the platform.
ENV HOME=/home/exporter \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65534:65534
WORKDIR /home/exporter
EXPOSE 10067
ENTRYPOINT ["/aws-cost-exporter"]
CMD ["--config.file=/etc/aws-cost-exporter/aws-cost-exporter.yaml"]
