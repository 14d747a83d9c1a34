# syntax=docker/dockerfile:1
#
# Vigil's image: built in the Rust image, run from a slim Debian as a non-root user.
# docker-compose.yml builds it; alone: `docker build -t vigil .` then
# `docker run -p 3000:3000 -e DATABASE_URL=mysql://… -e REDIS_URL=redis://… vigil`.

# The workspace's rust-version; Debian trixie on both stages, so the binary's glibc matches.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-trixie AS build
WORKDIR /src
# The whole workspace (benches is a member, migrations are embedded at compile time);
# .dockerignore keeps target/ and .git out of the context.
COPY . .
# Cache mounts keep the registry and the target dir between builds (BuildKit); the binary is
# copied out of the cached target dir because a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p vigil-server --bin vigil \
    && install -D -m 0755 target/release/vigil /out/vigil

FROM debian:trixie-slim AS runtime
# CA certificates: rustls reads the system store for rediss:// and MySQL ssl-mode. Not pinned
# (DL3008): the newest CA bundle of the release is the one wanted.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin vigil
COPY --from=build /out/vigil /usr/local/bin/vigil
USER 10001:10001
ENV VIGIL_ADDR=0.0.0.0:3000
EXPOSE 3000
# SIGTERM starts the graceful shutdown (drain, commit what is queued, close WebSockets).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/vigil"]
