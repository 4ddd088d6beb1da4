#!/bin/sh
# PostgreSQL under pgbench on loopback: initialise (once), start, load,
# benchmark for SECONDS, stop. Usage: pgbench.sh DIR PORT SECONDS
set -e
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
DIR=$1 PORT=$2 SECONDS=$3
as_pg() { su postgres -s /bin/sh -c "$1"; }
mkdir -p "$DIR"
chown postgres "$DIR"
[ -d "$DIR/data" ] || as_pg "$BIN/initdb -D $DIR/data" >/dev/null
as_pg "$BIN/pg_ctl -D $DIR/data -o '-k $DIR -p $PORT -c listen_addresses=127.0.0.1' -l $DIR/log -w start" >/dev/null
as_pg "$BIN/pgbench -i -q -h 127.0.0.1 -p $PORT postgres" >/dev/null 2>&1
as_pg "$BIN/pgbench -h 127.0.0.1 -p $PORT -T $SECONDS -c 4 -j 2 postgres" >/dev/null
as_pg "$BIN/pg_ctl -D $DIR/data -m fast -w stop" >/dev/null
