#!/bin/sh
# The master's side of bench/push.sh (BENCHMARKS.md, "Push", "master side"): runs it while
# sampling the master process every 0.2 s, then prints the master's CPU time and peak RSS, and
# each push request's time from the master's log (debug request lines).
set -e
W=/tmp/pushbench
# bench/push.sh deletes W/master: never beside another run (the numbers would be worthless too).
if pgrep -f "hummel push|master --repo $W/empty" > /dev/null; then
  echo "another push benchmark is running; wait for it" >&2
  exit 1
fi
export RUST_LOG=${RUST_LOG:-info,hummel_master::api=debug}
sh bench/push.sh &
BENCH=$!
PID=
while [ -z "$PID" ] && kill -0 $BENCH 2>/dev/null; do
  PID=$(pgrep -f "master --repo $W/empty" || true)
  sleep 0.1
done
TICKS=$(getconf CLK_TCK)
LAST=
while [ -n "$PID" ] && [ -r /proc/$PID/stat ]; do
  S=$(cut -d' ' -f14,15 /proc/$PID/stat 2>/dev/null || true)
  H=$(grep VmHWM /proc/$PID/status 2>/dev/null | tr -s ' ' | cut -d' ' -f2 || true)
  [ -n "$S" ] && [ -n "$H" ] && LAST="$S $H"
  sleep 0.2
done
wait $BENCH
set -- $LAST
echo "master: user $(echo "scale=2; $1/$TICKS" | bc) s, sys $(echo "scale=2; $2/$TICKS" | bc) s, peak RSS $3 KB"
grep -o 'path="/api/v1/push/publish".*elapsed_ms=[0-9]*' $W/master.log | sed 's/.*elapsed_ms=/publish request: /; s/$/ ms/' || true
grep -o 'push published.*' $W/master.log || grep 'push published' $W/master.log || true
