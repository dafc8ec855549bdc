# Build stage: the release binary, without the emulator (`--no-default-features`).
# Migrations are embedded at compile time; SQL is checked against `.sqlx/`
# (SQLX_OFFLINE), so the build needs no database. scripts/check-image lints
# this file and builds the same binary with the same flags in CI.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
ENV SQLX_OFFLINE=true CARGO_TERM_COLOR=never

# 1. The dependencies alone, from the workspace's manifests and stub sources:
#    this layer is reused until Cargo.toml, Cargo.lock or a member's manifest
#    changes, so a source change recompiles only our two crates. Every
#    `[[bench]]` the root manifest declares needs a file to exist.
COPY Cargo.toml Cargo.lock ./
COPY fake-google/Cargo.toml fake-google/
RUN mkdir -p src benches fake-google/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs fake-google/src/lib.rs \
    && sed -n '/^\[\[bench\]\]/,/^name/s/^name = "\(.*\)"/\1/p' Cargo.toml > /tmp/benches \
    && while read -r bench; do echo 'fn main() {}' > "benches/$bench.rs"; done < /tmp/benches \
    && cargo build --locked --release --no-default-features \
    && rm -rf src benches fake-google/src

# 2. Our sources. COPY keeps the files' own times, which can be older than
#    the stubs': touching the crate roots makes cargo rebuild our crates.
COPY . .
RUN touch src/main.rs src/lib.rs fake-google/src/lib.rs \
    && cargo build --locked --release --no-default-features

# Runtime stage: the binary and CA roots, run as an unprivileged user given
# by number, so Kubernetes' `runAsNonRoot` can verify it.
FROM debian:bookworm-slim
# ca-certificates is left unpinned: the base image's security updates pick
# its version, and a pinned one disappears from the archive.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 plansync \
    && useradd --system --uid 10001 --gid 10001 --no-create-home plansync
COPY --from=build /src/target/release/plansync /usr/local/bin/plansync
USER 10001:10001
# A fixed mmap threshold keeps glibc from serving each multi-megabyte page of
# events from the heap after the first, where it fragments: with it, a full
# sync's memory follows the page size, not the calendar's (BENCHMARKS.md).
ENV PLANSYNC_HTTP_ADDR=0.0.0.0:8080 PLANSYNC_LOG_FORMAT=json MALLOC_MMAP_THRESHOLD_=131072
EXPOSE 8080
ENTRYPOINT ["plansync"]
CMD ["run"]
