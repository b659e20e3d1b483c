#!/usr/bin/env bash
# Issue 10's GPU figures in one run: scoring throughput and MFU of a Llama-3.2-1B-shaped model
# (random weights, Llama-3's tokenizer; benchmarks/dice_shaped.py) in bf16 with sdpa on 384
# DICE-shaped sequences, token-budget batching against one sequence per forward pass, and the
# memory-bounded scoring path against the former full log-softmax one; where a scoring pass
# spends its GPU time (scoring_profile.py, kernels by kind); then DPO step times with
# the live reference model against reused reference log-probs, bf16 with gradient checkpointing
# as config/paper.yaml trains. Writes the three JSON results and their logs under OUT_DIR.
#
#   bash benchmarks/gpu_figures.sh OUT_DIR [SHAPE]
#
# SHAPE is llama-1b (default) or tiny, the same architecture at a size a CPU runs quickly.
# Environment: PYTHON, the interpreter (default python3); TOKENIZER, a tokenizer folder to use
# instead of building Llama-3's from the llama-models wheel (a GPU node without that wheel);
# SEQUENCES (default 384) and STEPS (default 8, on 4 pairs a step), smaller for a CPU check.
#
# --atol 1e-2: a sequence's log-prob here is a float32 sum of about 1,000 bf16 tokens' (about
# -11,000 for random weights); the old and new paths multiply in other shapes, and on an H200
# they differed by up to 2.3e-3 (2e-7 relative), over the script's default 1e-3, which is sized
# for the toy model's short float32 sequences.
set -euo pipefail
out=${1:?usage: bash benchmarks/gpu_figures.sh OUT_DIR [SHAPE]}
shape=${2:-llama-1b}
py=${PYTHON:-python3}
sequences=${SEQUENCES:-384}
steps=${STEPS:-8}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false TRL_EXPERIMENTAL_SILENCE=1 PYTHONUNBUFFERED=1
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0  # each benchmark runs even where the one before failed; exit: the last failure's code

"$py" benchmarks/dice_shaped.py --out "$work/model" --shape "$shape" \
    ${TOKENIZER:+--tokenizer "$TOKENIZER"}
"$py" benchmarks/scoring_throughput.py --model "$work/model" --dtype bfloat16 --attn sdpa \
    --texts dice --n-sequences "$sequences" --budgets 1,8192,32768,131072 --compare-budget 16384 \
    --wide-vocab 0 --no-vllm --repeats 3 --atol 1e-2 --out "$out/scoring_throughput.json" \
    2>&1 | tee "$out/scoring_throughput.log" || status=$?
"$py" benchmarks/scoring_profile.py --model "$work/model" --n-sequences "$sequences" \
    --budget 32768 --out "$out/scoring_profile.json" 2>&1 | tee "$out/scoring_profile.log" \
    || status=$?
"$py" benchmarks/ref_reuse.py --model "$work/model" --texts dice --pairs $((4 * steps)) \
    --steps "$steps" --batch 4 --repeats 2 --bf16 --gradient-checkpointing \
    --out "$out/ref_reuse.json" \
    2>&1 | tee "$out/ref_reuse.log" || status=$?
exit "$status"
