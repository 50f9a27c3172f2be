#!/usr/bin/env bash
# `make mutate`: mutmut over the modules named in pyproject.toml [tool.mutmut], then the
# score and the survivors that docs/testing.md does not explain. Not part of `make test`:
# about 40 minutes for all mutants with one child on a loaded 2-core machine. MUTATE_JOBS
# sets mutmut's parallel children (default: all cores). mutmut keeps its results in
# mutants/ and re-tests only what changed since; remove mutants/ to start from scratch.
set -euo pipefail
cd "$(dirname "$0")/../.."

log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "[mutate] mutmut run (progress in mutants/run.log)"
# mutmut redraws one progress line with carriage returns: keep its last state only
if ! mutmut run ${MUTATE_JOBS:+--max-children "$MUTATE_JOBS"} >"$log" 2>&1; then
    tail -c 4000 "$log" >&2
    echo "[mutate] mutmut run failed" >&2
    exit 1
fi
mkdir -p mutants
tr '\r' '\n' <"$log" >mutants/run.log
grep -E 'mutations/second|done in' mutants/run.log || true
mutmut export-cicd-stats >/dev/null
mutmut results --all true >mutants/results.txt
python tests/mutation/score.py mutants/mutmut-cicd-stats.json mutants/results.txt docs/testing.md
