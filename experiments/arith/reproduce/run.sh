#!/usr/bin/env bash
# The whole reproduction study of docs/reproduction.md, resumable (rerun it after an interruption):
#   experiments/arith/reproduce/run.sh [WORKDIR [extra bonjax flags...]]
# (default WORKDIR runs/reproduce; about 80 minutes on 2 CPU cores). Each study writes its tables
# (<study>.md), <study>.json, <study>.png and <study>_differences.png into its workdir: WORKDIR,
# WORKDIR_noisy (verifier_errors) and WORKDIR_learned (learned_verifier, after its reward model).
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
learned=(--gin_bindings="SFT_RUN_CHECKPOINTS = '${workdir}/seed_0/sft/checkpoints'"
         --gin_bindings="SFT_RUN_TOKENIZER = '${workdir}/seed_0/sft/tokenizer.model'"
         --gin_bindings="DATA_DIR = '${workdir}/data'"
         --gin_bindings="REWARD_MODEL = '${workdir}_learned/reward_model'")
if [[ ! -f "${workdir}_learned/reward_model/reward_model.json" ]]; then
  bonjax train_reward_model --gin_file=experiments/arith/reproduce/learned_verifier.gin \
    --workdir="${workdir}_learned/reward_model" "${learned[@]}" "$@"
fi
bonjax study --gin_file=experiments/arith/reproduce/learned_verifier.gin \
  --workdir="${workdir}_learned" --gin_bindings="run_study.report_name = 'learned_verifier'" \
  "${learned[@]}" "$@"
