#!/bin/sh
# Push throughput of new data to a master on 127.0.0.1 (BENCHMARKS.md, "Push").
set -e
BIN=${BIN:-target/release/hummel}
# The tree: 8 x 64 MiB from /dev/urandom and 8 x 64 MiB of base64 text (W/tree/@bench).
W=/tmp/pushbench
if [ ! -d $W/tree/@bench ]; then
  mkdir -p $W/tree/@bench
  for i in 0 1 2 3 4 5 6 7; do
    head -c $((64<<20)) /dev/urandom > $W/tree/@bench/rand$i.bin
    head -c $((48<<20)) /dev/urandom | base64 -w 76 | head -c $((64<<20)) > $W/tree/@bench/text$i.txt
  done
fi
rm -rf $W/master $W/empty $W/master.log && mkdir -p $W/empty
export HUMMEL_WRITE_TOKEN=bench-write-token HUMMEL_SLAVE_TOKEN=bench-slave-token
$BIN master --repo $W/empty --data $W/master --listen 127.0.0.1:0 2> $W/master.log &
PID=$!
trap 'kill $PID' EXIT
until grep -q "listening on http" $W/master.log; do sleep 0.1; done
URL=$(grep -o "listening on http[^ ]*" $W/master.log | head -1 | cut -d' ' -f3)
cat $W/tree/@bench/* > /dev/null
/usr/bin/time -f "wall %e s, user %U s, sys %S s, max RSS %M KB" $BIN push $W/tree --master $URL --json
