#!/usr/bin/env bash
# The evidence run (README, "The evidence run"), each stage timed into runs/evidence/stages.log:
#   bash benchmarks/evidence.sh tune    # tuning references, one sweep per method, and
#                                       # forgetmi select -> configs/presets/evidence.yaml
#   bash benchmarks/evidence.sh table [KIND...]  # the table on the untouched draw, per kind
#                                       # of memory (label, content, both; all by default),
#                                       # then forgetmi rankings across the kinds' kept reports
# Every stage resumes: a rerun skips what has finished. Tasks run $JOBS at a time (default 2),
# one thread each. Run from anywhere; paths are the repository's.
set -euo pipefail
cd "$(dirname "$0")/.."
FORGETMI=${FORGETMI:-.venv/bin/forgetmi}
JOBS=${JOBS:-2}
export OMP_NUM_THREADS=1
mkdir -p runs/evidence

stage() {
  local name=$1 start end
  shift
  start=$(date +%s)
  "$@"
  end=$(date +%s)
  echo "$(date -u +%FT%TZ) stage $name: $((end - start)) s" | tee -a runs/evidence/stages.log
}

tune() {
  stage tuning-references "$FORGETMI" protocol configs/experiments/evidence/tuning.yaml \
    --executor local --jobs "$JOBS"
  for sweep in configs/sweeps/tune/*.yaml; do
    method=$(basename "$sweep" .yaml)
    stage "tune-$method" "$FORGETMI" sweep "$sweep" --out "runs/evidence/tune/$method" \
      --executor local --jobs "$JOBS" --proposal-seed 0
  done
  stage select "$FORGETMI" select runs/evidence/tune/* --write configs/presets/evidence.yaml \
    ${FORCE:+--force}
}

table() {
  # one kind at a time if named (a kind: ~52 min on 2 cores, estimated); each kind's report is
  # kept in benchmarks/results/evidence/KIND/, which is what the rankings read
  local kinds=("$@")
  [ ${#kinds[@]} -gt 0 ] || kinds=(label content both)
  for kind in "${kinds[@]}"; do
    stage "table-$kind" "$FORGETMI" protocol "configs/experiments/evidence/$kind.yaml" \
      --executor local --jobs "$JOBS"
    mkdir -p "benchmarks/results/evidence/$kind"
    cp "runs/evidence/$kind/report/report.json" "runs/evidence/$kind/report/report.md" \
      "benchmarks/results/evidence/$kind/"
  done
  if [ -f benchmarks/results/evidence/label/report.json ] &&
     [ -f benchmarks/results/evidence/content/report.json ] &&
     [ -f benchmarks/results/evidence/both/report.json ]; then
    stage rankings "$FORGETMI" rankings label=benchmarks/results/evidence/label/report.json \
      content=benchmarks/results/evidence/content/report.json \
      both=benchmarks/results/evidence/both/report.json --out benchmarks/results/evidence
  fi
}

case "${1:-}" in
  tune) tune ;;
  table) shift; table "$@" ;;
  *) echo "usage: bash benchmarks/evidence.sh tune | table [label|content|both ...]" >&2; exit 2 ;;
esac
