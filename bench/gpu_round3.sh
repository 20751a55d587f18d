# Round 3: Triton variants at the Wan-1.3B shape (kernel fixed), then end-to-end Wan-1.3B 480p with every method.
#   source .gpu/p2/install.sh finish && DIT_SPARSE_COMMIT=<sha> bash bench/gpu_round3.sh
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
for variant in default tail0 tma; do
  case $variant in
    default) envs="";;
    tail0) envs="DIT_SPARSE_TRITON_TAIL=0";;
    tma) envs="DIT_SPARSE_TRITON_TMA=1";;
  esac
  env $envs timeout 150 python3 -m dit_sparse.eval.bench kernel --shapes wan1.3b-480p --backends triton \
    --densities 1.0,0.25,0.1 --reps 7 --out $OUT/sweep_$variant.json 2>&1 | grep -E "^wan|Error" | cut -c1-300
done
timeout 330 python3 -m dit_sparse.eval.bench e2e --model wan1.3b-480p --methods radial,draft,semantic --steps 10 \
  --dense-steps 2 --dense-layers 1 2>&1 | grep -E "^wan|wrote" | cut -c1-600
cp bench/results/*e2e*.json $OUT/ 2>/dev/null
