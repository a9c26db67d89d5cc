#!/usr/bin/env bash
# A vLLM benchmark as people run it: the server, then `vllm bench serve` against it.
# Simulate the same command:  oracle simulate scenarios/vllm_bench/bench.sh --out runs/bench
# Compare with a real result: oracle report scenarios/vllm_bench/example_result.json runs/bench/vllm/vllm_bench.json
vllm serve meta-llama/Llama-3.1-8B-Instruct --max-num-seqs 256 --disable-log-requests &

vllm bench serve \
  --model meta-llama/Llama-3.1-8B-Instruct \
  --dataset-name random --random-input-len 1024 --random-output-len 128 \
  --num-prompts 64 --max-concurrency 8 --ignore-eos \
  --save-result --result-filename example_result.json
