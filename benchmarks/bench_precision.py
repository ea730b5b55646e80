"""Precision benchmark: the same encoder with its forward passes in fp32 and under bf16 autocast
(``runtime.compute_in``, the ``precision`` parameter), side by side in one run. Prints a table.

    .venv/bin/python benchmarks/bench_precision.py [--encoder minilm|scratch] [--threads 1]

Training: one optimizer step (forward, MultipleNegativesRankingLoss with the grid's score, backward,
AdamW) on the same pre-tokenized pydoc batches, the two configurations interleaved step by step.
Encoding: ``encode_texts`` of the same documents, interleaved. Fidelity: the bf16 embeddings of the
untrained encoder against its fp32 ones (relative norm error, cosine). Ratios are bf16 / fp32 throughput:
above 1 where the CPU has bf16 matrix units (AMX), possibly below 1 where it has none.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from bench_retrieval import training_batches, training_step


def encoders(name: str, max_seq_length: int):
    from embsym_lib.adapters import sentence_transformers as st
    from embsym_lib.runtime import compute_in

    if name == "minilm":
        base = st.load_encoder("offline:minilm", device="cpu", max_seq_length=max_seq_length)
    else:
        base = st.scratch_encoder(max_seq_length=max_seq_length, device="cpu")
    return {"fp32": base, "bf16": compute_in(copy.deepcopy(base), "bf16")}


def fidelity(models, texts: list[str]) -> dict[str, float]:
    from embsym_lib.adapters.sentence_transformers import encode_texts

    a, b = (encode_texts(models[p], texts) for p in ("fp32", "bf16"))
    norm_error = ((b.norm(dim=1) - a.norm(dim=1)).abs() / a.norm(dim=1)).double()
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=1).double()
    return {
        "median |norm error|": norm_error.median().item(),
        "max |norm error|": norm_error.max().item(),
        "min cosine(fp32, bf16)": cosine.min().item(),
    }


def bench_encoding(models, texts: list[str], repeats: int) -> dict[str, float]:
    from embsym_lib.adapters.sentence_transformers import encode_texts

    seconds: dict[str, list[float]] = {p: [] for p in models}
    for _ in range(repeats):
        for precision, model in models.items():
            start = time.perf_counter()
            encode_texts(model, texts)
            seconds[precision].append(time.perf_counter() - start)
    return {p: len(texts) / statistics.median(s) for p, s in seconds.items()}


def bench_training(models, steps: int, repeats: int, batch_size: int, variant: str) -> dict[str, float]:
    from embsym_lib.adapters import sentence_transformers as st

    batches = training_batches(models["fp32"], steps, batch_size)
    setups = {}
    for precision, model in models.items():
        model.train()
        loss = st.retrieval_loss(model, st.retrieval_similarity(variant), 20.0)
        setups[precision] = (model, loss, torch.optim.AdamW(model.parameters(), lr=1e-5))
    for model, loss, optimizer in setups.values():  # warm-up
        training_step(model, loss, optimizer, batches[0])
    seconds: dict[str, list[float]] = {p: [] for p in setups}
    for _ in range(repeats):
        for features in batches:
            for precision, (model, loss, optimizer) in setups.items():
                seconds[precision].append(training_step(model, loss, optimizer, features))
    return {p: batch_size / statistics.median(s) for p, s in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encoder", choices=["minilm", "scratch"], default="minilm")
    parser.add_argument("--max-seq-length", type=int, default=48, help="the offline profile's 48")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--texts", type=int, default=256, help="documents encoded per repeat")
    parser.add_argument("--variant", default="dot", help="the grid variant scoring the training loss")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (a sweep run's: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as every run does (runtime.configure)
    torch.manual_seed(0)

    from embsym_lib.data import retrieval as rdata

    models = encoders(args.encoder, args.max_seq_length)
    texts = [d for _, d in rdata.load_training_pairs("pydoc", rdata.pydoc_dir(), args.texts)]
    facts = fidelity(models, texts)
    encoding = bench_encoding(models, texts, args.repeats + 1)
    training = bench_training(models, args.steps, args.repeats, args.batch_size, args.variant)
    print(
        f"\n{args.encoder}, {args.max_seq_length} tokens, {args.threads} thread(s), cpu; "
        f"training: batch {args.batch_size}, {args.steps} steps x {args.repeats} repeats ({args.variant}); "
        f"encoding: {len(texts)} documents; medians"
    )
    print(f"{'':<24}{'fp32':>12}{'bf16':>12}{'bf16 / fp32':>14}")
    for name, rate in (("training examples/s", training), ("encoding texts/s", encoding)):
        print(f"{name:<24}{rate['fp32']:>12.1f}{rate['bf16']:>12.1f}{rate['bf16'] / rate['fp32']:>14.2f}")
    print("\nbf16 embeddings of the untrained encoder against fp32:")
    for name, value in facts.items():
        print(f"  {name:<24}{value:.5f}")


if __name__ == "__main__":
    main()
