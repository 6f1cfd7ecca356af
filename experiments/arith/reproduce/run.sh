#!/usr/bin/env bash
# The whole reproduction study of docs/reproduction.md, resumable (rerun it after an interruption):
#   experiments/arith/reproduce/run.sh [WORKDIR [extra bonjax flags...]]
# (default WORKDIR runs/reproduce; about an hour on 2 CPU cores). Each study writes its tables
# (<study>.md), <study>.json, <study>.png and <study>_differences.png into the workdir.
set -euo pipefail
cd "$(dirname "$0")/../../.."
workdir="${1:-runs/reproduce}"
shift || true
for study in rl_methods bon_sft coscaling; do
  bonjax study --gin_file="experiments/arith/reproduce/${study}.gin" --workdir="${workdir}" \
    --gin_bindings="run_study.report_name = '${study}'" "$@"
done
bonjax study --gin_file=experiments/arith/reproduce/verifier_errors.gin \
  --workdir="${workdir}_noisy" --gin_bindings="run_study.report_name = 'verifier_errors'" "$@"
