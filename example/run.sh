#!/usr/bin/env bash
# The neuroflow example, end to end on this machine (`make example` from the repository
# root, with .venv/bin on PATH): generate synthetic DICOMs for 3 subjects x 2 sessions, run
# the workflow locally through neuroflow-recover (HeudiConv + dcm2niix -> QSIPrep stand-in
# -> QSIRecon stand-in -> QSIParc), then show where the results are.
set -euo pipefail
cd "$(dirname "$0")/.."

python example/make_example_data.py --out example/data --subjects 3 --sessions 2

neuroflow-recover --configfile example/config.yaml run -- --cores 2

results=example/results
# files named like $2 under $1, HeudiConv's bookkeeping folder .heudiconv left out
count() { find "$1" -name .heudiconv -prune -o -type f -name "$2" -print 2>/dev/null | wc -l | tr -d ' '; }
echo
echo "Results (under $results):"
echo "  BIDS:      $results/bids  NIfTI $(count "$results/bids" '*.nii.gz'), bval $(count "$results/bids" '*.bval'), bvec $(count "$results/bids" '*.bvec'), JSON $(count "$results/bids" '*.json')"
echo "  QSIPrep:   $results/derivatives/qsiprep  reports $(count "$results/derivatives/qsiprep" 'sub-*.html'), preprocessed DWI $(count "$results/derivatives/qsiprep" '*_desc-preproc_dwi.nii.gz')"
echo "  QSIRecon:  $results/derivatives/qsirecon  segmentations $(count "$results/derivatives/qsirecon" '*_dseg.nii.gz'), scalar maps $(count "$results/derivatives/qsirecon" '*_dwimap.nii.gz')"
requested=$(python - <<'PY'
import os
from neuroflow_recover.workflow.config import load_config
from neuroflow_recover.workflow.layout import final_targets
from neuroflow_recover.workflow.sheet import load_sessions
cfg = load_config(".", ["example/config.yaml"])
targets = final_targets(cfg, load_sessions(cfg["sessions"]))
print(f"{sum(os.path.isfile(t) for t in targets)} of the {len(targets)} the config requests present")
PY
)
echo "  QSIParc:   $results/derivatives/qsiparc  diffmap TSV $(count "$results/derivatives/qsiparc" '*_diffmap.tsv') ($requested)"
echo "  logs:      $results/logs   benchmarks: $results/benchmarks"
echo "  (QSIPrep and QSIRecon are STAND-INS here: example/standins/)"
