#!/bin/sh
# A stand-in for a real simulation: takes a rate and a size, "runs", and writes its parameters
# and a score to $PULLMAN_OUTPUT (the task's result.output).
#   sh simulate.sh RATE SIZE
set -eu
rate=$1
size=$2
score=$(awk -v r="$rate" -v n="$size" 'BEGIN { printf "%.4f", (1 - (1 - r) ^ 3) * log(n) }')
echo "rate=$rate size=$size score=$score"
json=$(printf '{"rate":%s,"size":%s,"score":%s}' "$rate" "$size" "$score")
if [ -n "${PULLMAN_OUTPUT:-}" ]; then echo "$json" > "$PULLMAN_OUTPUT"; else echo "$json"; fi
