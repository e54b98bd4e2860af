# aws-cost-exporter: a static (musl) binary on an empty image.
#
#   podman build -t aws-cost-exporter .            # or: docker build, buildah build
#   podman run --rm -p 10067:10067 aws-cost-exporter --demo
#
# The builder stage compiles the release binary and lays out the final root filesystem with
# deploy/container/rootfs.sh; the final stage is that filesystem on `scratch`: no shell, no
# package manager, a non-root user. CI builds the final stage from a binary built on the host
# (`buildah build --build-context builder=DIR --target runtime`, see .ci/run), since base
# images cannot be pulled there.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS builder
# musl-tools: the C compiler for the musl target (aws-lc-sys, ring); ca-certificates: the
# bundle the image ships; binutils: strip. Versions follow the base image's Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools ca-certificates binutils \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
# build.rs records the revision for aws_cost_exporter_build_info (the context has no .git).
ARG REVISION=unknown
RUN AWS_COST_EXPORTER_REVISION="${REVISION}" \
    cargo build --release --locked --target x86_64-unknown-linux-musl \
 && sh deploy/container/rootfs.sh target/x86_64-unknown-linux-musl/release/aws-cost-exporter \
      /etc/ssl/certs/ca-certificates.crt /out

FROM scratch AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="aws-cost-exporter" \
      org.opencontainers.image.description="Prometheus exporter for AWS Cost Explorer" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"
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
