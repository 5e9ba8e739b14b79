#!/usr/bin/env bash
# The shipped base model's recipe as one command (MODEL_CARD.md, "Recipe"): every stage in order,
# each skipped when its artifact exists; a `train` stage stopped part-way resumes where it stopped
# when this is run again (its checkpoint is in RUNS/<stage>.work). About four hours on 2 CPU cores.
#
#   scripts/base-model.sh [DATA [RUNS]]      DATA: ../shared/data, RUNS: var/runs
#   DRY_RUN=1 scripts/base-model.sh          print the commands instead of running them
#
# The result is RUNS/v2-lite0-224-s3 with its training evidence (the embeddings head retrains append
# to); copy its model.keras, manifest.json and evidence.npz into models/base/ and re-run the
# evaluate commands of MODEL_CARD.md to ship it.
set -euo pipefail

DATA=${1:-../shared/data}
RUNS=${2:-var/runs}
PY=${PY:-.venv/bin/python}
SOURCES=("$DATA/ham10000/train" "$DATA/isic2017/train")
EVAL=(--eval-data "$DATA/ham10000/eval" "$DATA/isic2017/val")
SPLIT=(--validation-fraction 0.1 0.15)

stage() {  # stage NAME COMMAND...: run COMMAND unless RUNS/NAME already holds a model
    local name=$1
    shift
    if [[ -n ${DRY_RUN:-} ]]; then
        echo "$*"
    elif [[ -f $RUNS/$name/model.keras ]]; then
        echo "$name: done already ($RUNS/$name)"
    else
        echo "$name: $*"
        "$@"
    fi
}

train() {  # train NAME EXTRA...: a train stage on both sources at 224x224 on the one validation split
    local name=$1
    shift
    stage "$name" "$PY" -m trainer_service train "${SOURCES[@]}" "${SPLIT[@]}" "${EVAL[@]}" \
        --out "$RUNS/$name" --version "$name" --input-size 224 224 "$@"
}

[[ -n ${DRY_RUN:-} ]] || mkdir -p "$RUNS"
train v2-lite0-224 --epochs 12
stage v2-lite0-224-r1 "$PY" -m trainer_service refit "$RUNS/v2-lite0-224" --out "$RUNS/v2-lite0-224-r1" \
    --version v2-lite0-224-r1 --work-dir "$RUNS/v2-lite0-224.work" --data "${SOURCES[@]}"
train v2-lite0-224-c1 --epochs 10 --learning-rate 3e-4 --seed 1 --split-seed 0 \
    --init-from "$RUNS/v2-lite0-224-r1"
train v2-lite0-224-c4 --epochs 10 --learning-rate 2e-4 --seed 4 --split-seed 0 \
    --init-from "$RUNS/v2-lite0-224-r1"
train v2-lite0-224-c5 --epochs 6 --learning-rate 3e-4 --seed 5 --split-seed 0 \
    --init-from "$RUNS/v2-lite0-224-r1"
stage v2-lite0-224-s3 "$PY" -m trainer_service soup \
    "$RUNS/v2-lite0-224-r1" "$RUNS/v2-lite0-224-c1" "$RUNS/v2-lite0-224-c4" "$RUNS/v2-lite0-224-c5" \
    --out "$RUNS/v2-lite0-224-s3" --version v2-lite0-224-s3 --work-dir "$RUNS/v2-lite0-224-c4.work" \
    --data "${SOURCES[@]}" "${EVAL[@]}"
# the embeddings of what it was fitted, validated and is judged on (trainer_service/commands/evidence_build.py)
if [[ -n ${DRY_RUN:-} ]]; then
    echo "$PY -m trainer_service evidence $RUNS/v2-lite0-224-s3 --data ${SOURCES[*]} --reference $DATA/ham10000/eval --out $RUNS/v2-lite0-224-s3/evidence.npz --work-dir $RUNS/v2-lite0-224-c4.work"
elif [[ -f $RUNS/v2-lite0-224-s3/evidence.npz ]]; then
    echo "evidence: done already ($RUNS/v2-lite0-224-s3/evidence.npz)"
else
    "$PY" -m trainer_service evidence "$RUNS/v2-lite0-224-s3" --data "${SOURCES[@]}" \
        --reference "$DATA/ham10000/eval" --out "$RUNS/v2-lite0-224-s3/evidence.npz" \
        --work-dir "$RUNS/v2-lite0-224-c4.work"
fi
