#!/bin/bash
# tests/soak/soak.sh — `make soak`: switchyard under mixed traffic with a cutover and a rollback
# every 30 s and a reload every minute, then checks zero failed requests, flat RSS and file
# descriptors, and no sanitizer report (tests/soak/soak.py does the work; see its docstring).
#
#   SOAK_BUILD    build directory holding switchyard and tests/origin/origin (default: build);
#                 an ASan build (meson -Db_sanitize=address,...) is detected and checked too
#   SOAK_SECONDS  duration (default 600, at least 60)
#   SOAK_OUT      where samples.csv, summary.json and switchyard.stderr go
#                 (default: SOAK_BUILD/soak)
#
# Everything runs under `nice -n 19`, on 127.0.0.1 only, with at most 17 client connections.
# Exit status: 0 passed, 1 a check failed, 2 usage (binaries missing).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${SOAK_BUILD:-build}
case $build in /*) ;; *) build=$root/$build ;; esac
seconds=${SOAK_SECONDS:-600}
out=${SOAK_OUT:-$build/soak}

for bin in "$build/switchyard" "$build/tests/origin/origin"; do
    if [ ! -x "$bin" ]; then
        echo "soak: $bin not found (build it first: ninja -C $build)" >&2
        exit 2
    fi
done

sanitize=none
if [ -f "$build/meson-info/intro-buildoptions.json" ]; then
    sanitize=$(python3 -c 'import json,sys
for o in json.load(open(sys.argv[1])):
    if o["name"] == "b_sanitize": print(o["value"])' "$build/meson-info/intro-buildoptions.json")
fi
if [ "$sanitize" != none ]; then
    # A smaller quarantine than ASan's 256 MiB so that RSS levels off within the warm-up
    # (use-after-free is still caught for the last 32 MiB of frees); leaks checked at exit.
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
    case $ASAN_OPTIONS in *quarantine_size_mb*) ;; *) ASAN_OPTIONS+=:quarantine_size_mb=32 ;; esac
    export ASAN_OPTIONS
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
fi

echo "soak: $build/switchyard ($sanitize), ${seconds}s, output in $out"
export SWITCHYARD=$build/switchyard ORIGIN=$build/tests/origin/origin SOURCE_ROOT=$root
export SWITCHYARD_SANITIZE=$sanitize PYTHONDONTWRITEBYTECODE=1
exec nice -n 19 python3 "$here/soak.py" --seconds "$seconds" --out "$out"
