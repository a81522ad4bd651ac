#!/usr/bin/env bash
# The GPU table in one run (issue 8): engine-vs-HF tests on CUDA, then the rollout benchmark in bf16
# (B = 1, 16, 64, 256) and in fp32 (exactness). On a machine without PyPI access, first build wheels on one
# that has it: `pip wheel --no-deps -w wheels omegaconf antlr4-python3-runtime bm25s PyStemmer rapidfuzz
# pytest pluggy iniconfig`, and copy the SmolLM2 tokenizer cache (~/.cache/dreamgym/models/*-tokenizer) to
# gpu_cache/models/. Results go to ${OUT:-.}/gpu_results.txt.
set -uo pipefail
OUT=${OUT:-.}
LOG="$OUT/gpu_results.txt"
export DREAMGYM_CACHE=${DREAMGYM_CACHE:-$PWD/gpu_cache}
SITE=/tmp/dreamgym-wheels  # wheels unpacked, not pip-installed (system Pythons may refuse pip; no build backend offline)
if [ -d wheels ]; then for w in wheels/*.whl; do python -m zipfile -e "$w" "$SITE"; done; fi
export PYTHONPATH=$PWD/src:$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}
{
  echo "## $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"
  python -c "import sys, torch, transformers, peft; print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
  python -m pytest -q -p no:cacheprovider -m gpu tests/test_engine.py tests/test_distributed.py 2>&1 | tail -3
  python benchmarks/rollout.py --device cuda --profile ${ROLLOUT_ARGS:-} 2>&1 | grep -v -i warn
  python benchmarks/rollout.py --device cuda --dtype float32 --batches 16 2>&1 | grep -v -i warn
  python benchmarks/sft.py --device cuda 2>&1 | grep -v -i warn | tail -12
  python benchmarks/synthetic_env.py --device cuda 2>&1 | grep -v -i warn | tail -12
  # needs bitsandbytes (wheels/bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl, 41 MiB)
  python -c "import bitsandbytes" 2>/dev/null && python benchmarks/memory_qlora.py 2>&1 | grep -v -i warn | tail -20
} 2>&1 | tee "$LOG"
