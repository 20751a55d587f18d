# Session 22 (issue #13, item 2): does a newer Triton compile and speed up our kernel's warp-specialised key loop on
# the H200 (Triton 3.6, the machine's, fails with "PassManager::run failed")? Triton 3.9 (PyPI) travels as two parts
# made here from its wheel with the AMD backend, Blackwell's ptxas and CUPTI removed (the parts are built by hand:
#   pip download --no-deps --python-version 3.12 --platform manylinux_2_28_x86_64 triton==3.9.0; unzip; remove
#   triton/backends/amd, triton/backends/nvidia/bin/ptxas-blackwell, triton/backends/nvidia/lib/cupti*,
#   triton/instrumentation; tar | xz -6; split -b 52M into .gpu/t1/tw_part_0, .gpu/t2/tw_part_1).
#   stage (with .gpu/t1, then with .gpu/t2):  park the part in /tmp
#   run:  unpack Triton 3.9 to /tmp/triton39 and time our kernel at Wan-1.3B 480p, densities 0.25 / 0.10, under
#         the machine's Triton and under 3.9 with and without DIT_SPARSE_TRITON_WS (kernel bench: effective TFLOP/s
#         and the error against the reference kernel). RUNS="3.9:0 3.9:1" picks runs, TAG names their files
#         (e.g. TAG=-tma with DIT_SPARSE_TRITON_TMA=1), SHAPES the kernel shapes, KERNEL_ARGS more options.
export PYTHONUNBUFFERED=1
case "${1:-run}" in
stage)
  mkdir -p /tmp/tw_parts && cp .gpu/t*/tw_part_* /tmp/tw_parts/ && ls /tmp/tw_parts
  ;;
run)
  if [ ! -d /tmp/triton39/triton ]; then
    mkdir -p /tmp/triton39 && cat /tmp/tw_parts/tw_part_* | xz -d | tar xf - -C /tmp/triton39 || exit 1
    chmod +x /tmp/triton39/triton/backends/nvidia/bin/*  # the parts were unzipped without the wheel's modes
  fi
  base=$PWD:$PYTHONPATH
  for run in ${RUNS:-3.6:0 3.9:0 3.9:1}; do
    ver=${run%%:*} ws=${run##*:}
    pp=$base; [ "$ver" = 3.9 ] && pp=/tmp/triton39:$base
    # 3.9 runs sm90 through its CUDA 13 ptxas ("ptxas-blackwell"), left out of the parts: its bundled CUDA 12 ptxas
    # stands in (Triton picks the PTX version from the ptxas it runs).
    export TRITON_PTXAS_BLACKWELL_PATH=/tmp/triton39/triton/backends/nvidia/bin/ptxas
    # In-tree backend discovery: the machine's Triton 3.6 entry points name an AMD backend that 3.9's copy lacks.
    PYTHONPATH=$pp TRITON_BACKENDS_IN_TREE=1 DIT_SPARSE_TRITON_WS=$ws timeout 240 python3 -c "import triton; print('triton', triton.__version__)"
    PYTHONPATH=$pp TRITON_BACKENDS_IN_TREE=1 DIT_SPARSE_TRITON_WS=$ws timeout 240 python3 -m dit_sparse.eval.bench \
      kernel --shapes ${SHAPES:-wan1.3b-480p} --densities 0.25,0.1 --backends triton ${KERNEL_ARGS:-} \
      --out $OUT/kernel-triton$ver-ws$ws${TAG:-}.json 2>&1 | grep -E "triton|Error|error" | cut -c1-400
  done
  ;;
esac
