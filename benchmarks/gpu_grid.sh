#!/usr/bin/env bash
# The accuracy grid on one CUDA GPU at 256 px (issue 15: DarkCovidNet's own
# resolution), run as processes side by side, one per task and protocol: a
# small CNN leaves most of the GPU idle, and each process's Python
# bookkeeping needs CPU cores of its own. Beside them, a fifth process trains
# cnn_defaults at batch 128 (image-level folds), the accuracy side of a
# larger batch on CUDA (speed.py --sections cuda measures its speed).
#
#   bash benchmarks/gpu_grid.sh OUTDIR LOGDIR [more accuracy.py arguments]
#
# Writes OUTDIR/part_<task>_<protocol>.json and OUTDIR/batch128.json (each
# written after every model, so a stopped run keeps what finished) and one log
# per process in LOGDIR. Merge the parts with
#
#   python benchmarks/accuracy.py --merge OUTDIR/part_*.json --out results/gpu/accuracy_px256.json
#
# DEVICE=cpu runs the same on the CPU (a smoke test with --quick --phantom).
#
# PAPER=1 (issue 30) runs instead the DarkCovidNet paper's recipe, the rows
# darkcovidnet_paper (CNNClassifier.from_preset("darkcovidnet_paper"): 256 px,
# 100 epochs), one process per task and protocol, into
# OUTDIR/paper_<task>_<protocol>.json; merge them into a sibling of the grid:
#
#   PAPER=1 bash benchmarks/gpu_grid.sh OUTDIR LOGDIR
#   python benchmarks/accuracy.py --merge OUTDIR/paper_*.json --out results/gpu/darkcovidnet_paper.json
set -u
out=${1:?usage: gpu_grid.sh OUTDIR LOGDIR [accuracy.py arguments]}
logs=${2:?usage: gpu_grid.sh OUTDIR LOGDIR [accuracy.py arguments]}
shift 2
mkdir -p "$out" "$logs"
py=${PYTHON:-python3}
common=(--device "${DEVICE:-cuda}" --masking --image-size 256 --threads "${THREADS:-3}" --resnet-weights none)
pids=()
# PAPER=1: the darkcovidnet_paper rows, files named paper_*; else the grid.
prefix=part_ log_prefix= models=()
if [ "${PAPER:-0}" = 1 ]; then
    prefix=paper_ log_prefix=paper_ models=(--models darkcovidnet_paper)
fi
for task in binary 3class; do
    for protocol in image patient; do
        "$py" benchmarks/accuracy.py "${common[@]}" --tasks "$task" --protocols "$protocol" "${models[@]}" \
            --out "$out/${prefix}${task}_${protocol}.json" "$@" \
            >"$logs/${log_prefix}${task}_${protocol}.txt" 2>&1 &
        pids+=($!)
    done
done
if [ "${PAPER:-0}" != 1 ]; then
    "$py" benchmarks/accuracy.py "${common[@]}" --protocols image --models cnn_defaults \
        --batch-size 128 --label "batch 128" --out "$out/batch128.json" "$@" >"$logs/batch128.txt" 2>&1 &
    pids+=($!)
fi
status=0
for pid in "${pids[@]}"; do
    wait "$pid" || status=1
done
exit $status
