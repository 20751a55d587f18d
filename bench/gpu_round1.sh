# Round 1 on the GPU machine: smoke checks, kernel and pattern benchmarks. Usage (after staging .gpu/p1):
#   source .gpu/p2/install.sh finish && DIT_SPARSE_COMMIT=<sha> bash bench/gpu_round1.sh
set -x
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.used --format=csv
python3 bench/gpu_check.py 2>&1 | tee $OUT/check.log
python3 -m dit_sparse.eval.bench kernel --reps 7 2>&1 | tee $OUT/kernel.log
python3 -m dit_sparse.eval.bench pattern --shape wan1.3b-480p --methods radial,draft,semantic 2>&1 | tee $OUT/pattern.log
cp bench/results/*.json $OUT/ 2>/dev/null
ls -la $OUT
