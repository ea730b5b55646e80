#!/usr/bin/env bash
# GPU validation (issue 6): every family's paper-profile code path at tiny scale on a CUDA machine with no
# network, on stand-in data in the paper's formats (tests/fixtures/ and tiny random checkpoints made by
# tools/make_standins.py, carried in .gpucheck/), then the grid and retrieval benchmarks. Results: $OUT/gpu_summary.md + logs.
# Wheels for what the GPU image lacks (papermill, pykeen, recbole, open_clip, learn2learn, ...) are carried
# in .whl/ (see docs/gpu.md for how they were made).
set -u
OUT=${OUT:-/tmp/gpu_check_out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  > "$OUT/install.log" 2>&1 || { tail -20 "$OUT/install.log"; exit 1; }
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
RUNS=/tmp/gpu_runs; mkdir -p "$RUNS"
E="python3 -m embsym_lib.cli"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, sentence_transformers, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'st', sentence_transformers.__version__, 'tf', transformers.__version__)" | tee -a "$OUT/gpu.txt"
S=.gpucheck/models  # made here by tools/make_standins.py, carried
run() { local fam=$1; shift; echo "=== $fam $*" >> "$OUT/families.log"; local t0=$(date +%s)
  timeout 150 $E run "$fam" --profile paper --seeds 0 --outputs "$RUNS" "$@" >> "$OUT/families.log" 2>&1
  echo "$fam rc=$? $(( $(date +%s) - t0 ))s" | tee -a "$OUT/families.log"; }
run kg --variants dot cosine --set dataset=path:tests/fixtures/kg/fb15k237_sample --set composition=distmult \
  --set epochs=2 --set embedding_dim=32 --set num_negatives=8 --set batch_size=64 --set magnitude_queries=20
run fewshot --variants dnorm euclidean --set data_dir=tests/fixtures/fewshot --set dataset=miniimagenet --set shots=1 \
  --set ways=2 --set train_ways=2 --set queries=1 --set train_queries=1 --set episodes=20 --set eval_every=10 --set val_episodes=10 --set test_episodes=20
run recsys --variants dot cosine --set data_dir=tests/fixtures/recsys --set dataset=ml-1m --set model=bpr --set epochs=2
run clip --variants cosine qnorm --set data_dir=tests/fixtures/clip/coco \
  --set coco_train_annotations=annotations/captions_val2017.json --set coco_train_images=val2017 \
  --set epochs=1 --set batch_size=3 --set zero_shot=false --set loss_direction=sym
run sts --variants cosine dnorm --set encoder=$S/facebook/contriever --set data_dir=tests/fixtures/sts/stsb_original \
  --set nli_file=tests/fixtures/sts/AllNLI.tsv.gz --set epochs=1
run retrieval --variants cosine qnorm learn --set train_processes=1 --set encoder=contriever --set model_dir=$S --set data_dir=tests/fixtures/retrieval \
  --set "test_sets=[msmarco_dev, trec_dl19, scifact, cqadupstack, biology]" --set "rag_sets=[nq]" --set batch_size=2 \
  --set max_steps=2 --set dev_queries=4 --set dev_corpus=50 --set fisher_pairs=64 --set fisher_batch=16 --set n_evals=2
run synthetic --variants cosine qnorm --set task=asymmetric --set epochs=2
python3 tools/gpu_summary.py "$RUNS" | tee "$OUT/gpu_summary.md"
python3 benchmarks/bench_grid.py --device cuda --quick 2>&1 | tee "$OUT/bench_grid.txt"
python3 benchmarks/bench_retrieval.py --encoder "random-bert-base:$S/facebook/contriever" --steps 8 --repeats 3 \
  --batch-size 128 --max-seq-length 128 --queries 4096 --docs 200000 2>&1 | grep -v -i warn | tee "$OUT/bench_retrieval.txt"
