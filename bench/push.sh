#!/bin/sh
# Push throughput of new data to a master on 127.0.0.1 (BENCHMARKS.md, "Push").
set -e
BIN=${BIN:-target/release/hummel}
# The tree: 8 x 64 MiB from /dev/urandom and 8 x 64 MiB of base64 text (W/tree/@bench).
W=/tmp/pushbench
rm -rf $W/master $W/empty && mkdir -p $W/empty
export HUMMEL_WRITE_TOKEN=bench-write-token HUMMEL_SLAVE_TOKEN=bench-slave-token
$BIN master --repo $W/empty --data $W/master --listen 127.0.0.1:0 2> $W/master.log &
PID=$!
trap 'kill $PID' EXIT
until grep -q "listening on http" $W/master.log; do sleep 0.1; done
URL=$(grep -o "listening on http[^ ]*" $W/master.log | head -1 | cut -d' ' -f3)
cat $W/tree/@bench/* > /dev/null
/usr/bin/time -f "wall %e s, user %U s, sys %S s, max RSS %M KB" $BIN push $W/tree --master $URL --json
