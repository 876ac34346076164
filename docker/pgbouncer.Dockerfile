# pgbouncer (Debian's package) between the sweep workers and PostgreSQL; settings in
# docker/pgbouncer.ini, credentials from the environment (docker/pgbouncer-entrypoint.sh).
# Build from the repository root: docker build -f docker/pgbouncer.Dockerfile .
FROM debian:bookworm-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends pgbouncer \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10002 bouncer \
    && useradd --uid 10002 --gid 10002 --no-create-home --shell /usr/sbin/nologin bouncer

COPY docker/pgbouncer.ini /etc/pgbouncer/pgbouncer.ini
COPY docker/pgbouncer-entrypoint.sh /usr/local/bin/pgbouncer-entrypoint.sh

# pgbouncer refuses to run as root.
USER 10002:10002
EXPOSE 6432
ENTRYPOINT ["/usr/local/bin/pgbouncer-entrypoint.sh"]
