#!/bin/sh
# Fails at random, like a task hitting a transient error (a busy licence server, a network blip).
#   sh flaky.sh PERCENT_FAILING
set -eu
roll=$(awk 'BEGIN { srand(); printf "%d", rand() * 100 }')
if [ "$roll" -lt "$1" ]; then
  echo "transient failure (rolled $roll < $1) on attempt ${PULLMAN_ATTEMPT:-?}" >&2
  exit 75
fi
echo "ok on attempt ${PULLMAN_ATTEMPT:-?}"
