#!/bin/sh
# Starts pgbouncer with docker/pgbouncer.ini. The auth file (user and password pgbouncer checks
# clients against and logs in to PostgreSQL with) is written here from the environment, into a
# folder only this user can read, so no password is in the image, a file in the repository, or a
# command line.
set -eu
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD (the database password; from a secret)}"
user="${POSTGRES_USER:-sweep}"
dir="${PGBOUNCER_AUTH_DIR:-/tmp/pgbouncer}"
umask 077
mkdir -p "$dir"
# userlist.txt format: "user" "password", a double quote inside doubled.
printf '"%s" "%s"\n' "$(printf '%s' "$user" | sed 's/"/""/g')" \
    "$(printf '%s' "$POSTGRES_PASSWORD" | sed 's/"/""/g')" > "$dir/userlist.txt"
unset POSTGRES_PASSWORD
exec pgbouncer "${PGBOUNCER_CONFIG:-/etc/pgbouncer/pgbouncer.ini}"
