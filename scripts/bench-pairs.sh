#!/usr/bin/env bash
# Alternating pairs of `martix bench` on PostgreSQL, each run on a fresh database:
#   scripts/bench-pairs.sh OLD_BINARY NEW_BINARY PAIRS [bench flags...]
# e.g. scripts/bench-pairs.sh /tmp/old/martix target/dist/martix 3 --concurrency 64
# Prints each run's output, labelled; compare the runs side by side (this machine's speed
# drifts within minutes, so only neighbours are comparable).
set -euo pipefail
old=$1 new=$2 pairs=$3
shift 3
base=${MARTIX_BENCH_SERVER:-postgres://postgres@127.0.0.1:5432}
for i in $(seq 1 "$pairs"); do
  for which in old new; do
    bin=$old; [ "$which" = new ] && bin=$new
    db="martix_bench_pair_$$_${i}_$which"
    psql "$base/postgres" -qc "CREATE DATABASE $db" >/dev/null
    echo "=== pair $i: $which ($bin)"
    "$bin" bench --embedded "$base/$db" "$@" 2>/dev/null || echo "(run failed)"
    psql "$base/postgres" -qc "DROP DATABASE $db WITH (FORCE)" >/dev/null
  done
done
