#!/bin/sh
# `make test`: the offline layers (render, program, validators, engine) run beside the VM-based
# end-to-end suite, in two pytest processes. The end-to-end suite spends most of its time waiting
# on a TCG VM, so the offline layers' minutes fit beside it instead of before it. The offline
# run's output goes to build/test-offline.log and is printed when both are done; the exit status
# is non-zero when either failed. Extra arguments go to both pytest runs.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
mkdir -p build
( "$PY" -m pytest -q -m "not e2e and not mesh" -p no:cacheprovider --basetemp=build/pytest-offline "$@" \
    > build/test-offline.log 2>&1
  echo $? > build/test-offline.rc ) &
"$PY" -m pytest -q -m "e2e and not mesh" --basetemp=build/pytest-e2e "$@"
e2e=$?
wait
echo "== the offline layers, run beside it (build/test-offline.log):"
cat build/test-offline.log
offline=$(cat build/test-offline.rc 2>/dev/null || echo 1)
echo "== offline: exit $offline; end to end: exit $e2e"
[ "$offline" = 0 ] && [ "$e2e" = 0 ]
