#!/usr/bin/env bash
# Train the `small` model (33x384x640 clips, 8,640 tokens) and retrain `tiny` (the trainer's current defaults) at the
# same time on one H200, ~7.5 minutes each, and pack both for the trip back. Everything lands under $OUT, 8 files at
# most, none over 15 MiB, folder depth 1:
#   $OUT/small/small_model.tar.part-00..02 + train_log.json   (~36 MB pipeline, PNGs inside the tar)
#   $OUT/tiny/tiny_model.tar.part-00..01  + train_log.json    (~21 MB)
#   $OUT/train.log   both trainers' output (lines prefixed [small] / [tiny]), GPU memory snapshots, the file list
# Two processes share the GPU on purpose: neither saturates it alone (tiny's steps are small, small's data side is
# bursty), and the wall time is what the lent machine limits. Each trainer packs right after saving its pipeline and
# again after its sample evaluation, so a trainer stopped by the hard limit still leaves a usable pack.
#
#   <install step: diffusers importable> && bash bench/train_models.sh
#   unpack: cat $OUT/small/small_model.tar.part-* | tar -x -C dit_sparse/pipelines/small_model
#           cat $OUT/tiny/tiny_model.tar.part-* | tar -x -C dit_sparse/pipelines/tiny_model
set -u
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1
OUT=${OUT:?set OUT to the folder that comes back}
SMALL_MINUTES=${SMALL_MINUTES:-7.5}
TINY_MINUTES=${TINY_MINUTES:-7.5}
HARD_LIMIT_S=${HARD_LIMIT_S:-505}  # per trainer; both start together, so the script ends within ~8.5 minutes
WORK=${WORK:-/tmp/dit_sparse_train}  # pipelines and resumable checkpoints (not returned: too large)
LOG=$OUT/train.log
mkdir -p "$OUT/small" "$OUT/tiny" "$WORK"
: >"$LOG"
note() { echo "[train_models $(date +%H:%M:%S)] $*" >>"$LOG"; }

train() {  # name, then trainer options
  local name=$1
  shift
  timeout -k 15 "$HARD_LIMIT_S" python3 -m dit_sparse.pipelines.train_tiny --out "$WORK/$name" --pack "$OUT/$name" \
    "$@" 2>&1 | sed -u "s/^/[$name] /" >>"$LOG"
  note "$name trainer exited with status ${PIPESTATUS[0]} (124: stopped by the ${HARD_LIMIT_S} s hard limit)"
}

note "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $(python3 -c 'import torch, diffusers; print("torch", torch.__version__, "diffusers", diffusers.__version__)' 2>&1)"
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv,noheader >>"$LOG" 2>&1
(while sleep 60; do note "GPU $(nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader 2>&1)"; done) >/dev/null 2>&1 &
monitor=$!

train small --preset small --minutes "$SMALL_MINUTES" &
small=$!
train tiny --minutes "$TINY_MINUTES" &
tiny=$!
wait "$small" "$tiny"
kill "$monitor" 2>/dev/null

# The log copies next to the tars are conveniences (the tars hold them too): drop them if the 8-file limit is at risk.
if [ "$(find "$OUT" -type f | wc -l)" -gt 8 ]; then
  rm -f "$OUT/small/train_log.json" "$OUT/tiny/train_log.json"
  note "more than 8 files: removed the train_log.json copies (each is inside its tar)"
fi
note "files under \$OUT:"
(cd "$OUT" && find . -type f -printf '%10s  %p\n' | sort -k2) >>"$LOG"
grep -h -E "^\[(small|tiny)\] .*(done in|stage [12]|Traceback|Error|packed)" "$LOG" | tail -n 20
