#!/bin/bash
# Usage: cargo build --release && tools/bench-cluster-secret.sh  (RabbitMQ on 127.0.0.1:5672,
# openssl, curl and python3; addresses 127.29.13.x). Prints each run's JSON report (its
# "total" holds ops and errors).
# Compare an open and a closed multi-process layout (3 data + 1 api on RabbitMQ):
# 4 KiB GETs (cache off: every GET reads a shard) and 4 KiB PUTs, 8 s each, alternating.
B=${CAIRN:-target/release/cairn}
BUS=amqp://guest:guest@127.0.0.1:5672
run() { # $1 = label, $2 = open or closed
  d=$(mktemp -d); openssl rand -hex 32 > $d/secret; chmod 600 $d/secret
  extra=""; [ "$2" = closed ] && extra="--cluster-secret-file $d/secret"
  pids=""
  for i in 1 2 3; do $B data --listen 127.29.13.$i:12345 --root $d/data$i --bus $BUS --heartbeat-interval 200ms $extra 2>/dev/null & pids="$pids $!"; done
  $B api --listen 127.29.13.10:12345 --bus $BUS --meta sqlite:$d/meta.sqlite --cache-size 0 --policy 2+1 --small-policy 1+2 --heartbeat-expiry 2s $extra 2>/dev/null & pids="$pids $!"
  for t in $(seq 1 100); do curl -s 127.29.13.10:12345/healthz | grep -q '"live_data_servers":3' && break; sleep 0.1; done
  for op in get put; do
    $B bench --endpoint http://127.29.13.10:12345 --op $op --size 4KiB --concurrency 16 --duration 8s --objects 200 --json 2>/dev/null \
      | python3 -c "import sys,json; t=json.load(sys.stdin)['total']; print('$1', '$op', t['ops'] / 8, 'ops/s', t['errors'], 'errors')"
  done
  kill $pids; wait 2>/dev/null; rm -rf $d
}
for round in 1 2; do run open open; run closed closed; done
