# Build stage: the release binary. Migrations are embedded at compile time.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin plansync

# Runtime stage: the binary, CA roots and the demo fixtures, run as an
# unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home plansync
COPY --from=build /src/target/release/plansync /usr/local/bin/plansync
COPY --from=build /src/fixtures /usr/share/plansync/fixtures
USER plansync
# A fixed mmap threshold keeps glibc from serving each multi-megabyte page of
# events from the heap after the first, where it fragments: with it, a full
# sync's memory follows the page size, not the calendar's (BENCHMARKS.md).
ENV PLANSYNC_HTTP_ADDR=0.0.0.0:8080 PLANSYNC_LOG_FORMAT=json MALLOC_MMAP_THRESHOLD_=131072
EXPOSE 8080
ENTRYPOINT ["plansync"]
CMD ["run"]
