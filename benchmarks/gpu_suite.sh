#!/usr/bin/env bash
# The GPU table in one run (issues 5 and 8), most wanted first, each stage under its own time cap so that one
# hang or failure still leaves the others' numbers: the 8B NF4 + 3B LoRA memory check, the rollout benchmark
# in bf16 (B = 1, 16, 64, 256), QLoRA SFT of a 1.5B-shaped experience model through fit-world-model, a
# kernel profile of the engine, the engine with its decode step compiled (torch.compile), the rollout with the
# policy's LoRA attached (eager-in-graph and compiled; the RL workload runs the adapter unmerged), the engine-vs-HF
# and FSDP tests on CUDA, the rollout benchmark in fp32 (exactness), SFT ours-vs-plain on the 1.5B QLoRA
# model. On a machine without PyPI access, first build wheels on one that has it:
#   pip wheel --no-deps -w wheels omegaconf antlr4-python3-runtime bm25s PyStemmer rapidfuzz pytest pluggy iniconfig
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_24_x86_64 -d wheels \
#       bitsandbytes==0.50.2
# (to fit the 64 MiB carry cap with transformers/peft wheels beside it, drop the bitsandbytes wheel's
# libbitsandbytes_* libraries other than cpu, cuda130 and cuda132: 43 MB -> 18 MB)
# and copy the SmolLM2 tokenizer cache (~/.cache/dreamgym/models/*-tokenizer) to gpu_cache/models/ and some SFT
# records (`dreamgym annotate` output) to gpu_cache/sft_sample.jsonl. Results go to ${OUT:-.}/gpu_results.txt.
# STAGES picks stages by name, in the order given (default: all, in the order below); e.g. a short device
# budget: STAGES="qlora profile tests" bash benchmarks/gpu_suite.sh, then STAGES="compile sft".
set -uo pipefail
OUT=${OUT:-.}
LOG="$OUT/gpu_results.txt"
export DREAMGYM_CACHE=${DREAMGYM_CACHE:-$PWD/gpu_cache} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
SITE=/tmp/dreamgym-wheels  # wheels unpacked, not pip-installed (system Pythons may refuse pip; no build backend offline)
if [ -d wheels ]; then for w in wheels/*.whl; do python3 -m zipfile -e "$w" "$SITE"; done; fi
export PYTHONPATH=$PWD/src:$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}
MODEL_1B5=/tmp/qwen2.5-1.5b-random
stage() {  # stage SECONDS TITLE COMMAND...: run under a time cap, say how it ended
  local cap=$1 title=$2; shift 2
  echo; echo "### $title (cap ${cap} s)"
  local t0=$SECONDS
  timeout -k 5 "$cap" "$@" 2>&1 | grep -v -E "it/s\]|Loading weights|Writing model|warnings.warn|Tip:|num_workers"
  local rc=${PIPESTATUS[0]}
  echo "### end: rc $rc, $((SECONDS - t0)) s"
}
{
  echo "## $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"
  python3 -c "import sys, torch, transformers, peft, lightning; print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'lightning', lightning.__version__)"
  python3 -c "import bitsandbytes as b; print('bitsandbytes', b.__version__)" 2>&1 | tail -1
  for name in ${STAGES:-memory rollout qlora profile compile lora graphs tests fp32 sft}; do
    case $name in
      memory) stage 110 "memory: 8B NF4 experience model + 3B LoRA policy" python3 benchmarks/memory_qlora.py ;;
      rollout) stage 150 "rollout bf16 (engine vs HF generate)" python3 benchmarks/rollout.py --device cuda --profile ${ROLLOUT_ARGS:-} ;;
      qlora) stage 150 "QLoRA SFT, 1.5B-shaped experience model (fit-world-model)" \
        python3 benchmarks/qlora_sft.py --data gpu_cache/sft_sample.jsonl --model-dir $MODEL_1B5 --steps 8 --batch-size 4 ;;
      profile) stage 60 "engine kernel profile (B=16)" python3 benchmarks/rollout.py --device cuda --batches 16 --torch-profile ;;
      compile) stage 240 "rollout bf16, decode step compiled (torch.compile) then captured, B=16" \
        python3 benchmarks/rollout.py --device cuda --batches 16 --compile-decode --profile ;;
      lora) stage 300 "rollout bf16 with the policy's LoRA r16: CUDA graph, then compiled + graph, B=16" bash -c \
        "python3 benchmarks/rollout.py --device cuda --batches 16 --lora-rank 16 --profile --count-ops && \
         python3 benchmarks/rollout.py --device cuda --batches 16 --lora-rank 16 --compile-decode --profile" ;;
      graphs) stage 45 "CUDA graph capture check" python3 benchmarks/graph_check.py ;;
      tests) stage 120 "GPU tests (engine vs HF, CUDA graphs; FSDP vs DDP)" \
        python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_engine.py tests/test_distributed.py -rs ;;
      fp32) stage 40 "rollout fp32 (exactness)" python3 benchmarks/rollout.py --device cuda --dtype float32 --batches 16 ;;
      sft) [ -f $MODEL_1B5/config.json ] || python3 -c "import sys; sys.path.insert(0, 'benchmarks'); \
             from pathlib import Path; from qlora_sft import write_shaped_model; \
             write_shaped_model('qwen2.5-1.5b', Path('$MODEL_1B5'), 'cuda')"
           stage 90 "SFT ours vs plain peft loop, 1.5B QLoRA" python3 benchmarks/sft.py --device cuda --model $MODEL_1B5 \
             -c configs/paper/webshop_world_model.yaml --examples ${SFT_EXAMPLES:-32} --batch-size ${SFT_BATCH:-4} --threads 0 ;;
      *) echo "unknown stage '$name' (expected: memory rollout qlora profile compile lora graphs tests fp32 sft)"; exit 2 ;;
    esac
  done
} 2>&1 | tee "$LOG"
