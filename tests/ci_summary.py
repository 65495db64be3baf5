#!/usr/bin/env python3
"""Sums meson test results for CI: reads each build dir's meson-logs/testlog.json (one JSON object
per line, with a "result" field) and prints per-dir counts, the failing tests, and finally one
plain line "N passed, N failed, N skipped".

usage: ci_summary.py BUILD_DIR_OR_TESTLOG...
Exit status: 0 when no test failed and at least one test ran (passed or failed), else 1.
Python standard library only.
"""

import json
import os
import sys

PASSED = {"OK", "EXPECTEDFAIL"}
SKIPPED = {"SKIP"}
FAILED = {"FAIL", "TIMEOUT", "ERROR", "UNEXPECTEDPASS"}


def testlog_path(arg):
    if os.path.isdir(arg):
        return os.path.join(arg, "meson-logs", "testlog.json")
    return arg


def read_log(path):
    """Returns (passed, failed, skipped, failing names, notes) for one testlog.json."""
    passed = failed = skipped = 0
    failing = []
    notes = []
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except OSError as e:
        return 0, 0, 0, [], ["no test log (%s)" % (e.strerror or e)]
    with f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
                result = str(rec["result"]).upper()
            except (ValueError, KeyError, TypeError):
                # A line we cannot read is a result we cannot vouch for.
                failed += 1
                failing.append("%s:%d: unreadable line" % (path, lineno))
                continue
            name = str(rec.get("name", "?"))
            if result in PASSED:
                passed += 1
            elif result in SKIPPED:
                skipped += 1
            else:
                # FAILED and anything unknown to this script.
                failed += 1
                failing.append("%s (%s)" % (name, result))
    return passed, failed, skipped, failing, notes


def main(argv):
    if len(argv) < 2:
        sys.stderr.write("usage: %s BUILD_DIR_OR_TESTLOG...\n" % argv[0])
        return 2
    total_p = total_f = total_s = 0
    for arg in argv[1:]:
        path = testlog_path(arg)
        p, f, s, failing, notes = read_log(path)
        total_p += p
        total_f += f
        total_s += s
        detail = "; ".join(notes) if notes else "ok=%d fail=%d skip=%d" % (p, f, s)
        print("  %-18s %s" % (arg, detail))
        for name in failing:
            print("    FAILED %s" % name)
    ran = total_p + total_f
    if ran == 0:
        print("  no test ran")
    print("%d passed, %d failed, %d skipped" % (total_p, total_f, total_s))
    sys.stdout.flush()
    return 0 if total_f == 0 and ran > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
