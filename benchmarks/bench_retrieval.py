"""Retrieval benchmark: training throughput of each grid variant vs sentence-transformers' stock loss,
and exact-search throughput vs a plain matmul + topk. Prints a table.

    .venv/bin/python benchmarks/bench_retrieval.py [--encoder scratch|minilm] [--steps 8] [--repeats 3]

Training: the same model, the same pre-tokenized batches, one optimizer step each (forward, loss,
backward, AdamW), for the stock ``MultipleNegativesRankingLoss(similarity_fct=cos_sim)`` and for the
loss built by ``adapters.sentence_transformers.retrieval_loss`` under every variant. Configurations are
interleaved step by step (so load changes on a shared machine hit all alike); examples/s = batch size /
median step time; ratio = variant / stock (target >= 0.97). Search: ``ir_metrics.exact_search`` under each variant vs
``(q @ d.T).topk(k)`` on the same random embeddings, in scored (query, document) pairs per second.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def training_batches(model, n_batches: int, batch_size: int, synthetic_text: bool = False):
    if synthetic_text:
        # Random word sequences from the tokenizer's vocabulary: for a machine without the pydoc data.
        vocab = [w for w in model.tokenizer.get_vocab() if w.isalpha()]
        g = torch.Generator().manual_seed(0)

        def text(n: int) -> str:
            return " ".join(vocab[i] for i in torch.randint(len(vocab), (n,), generator=g).tolist())

        pairs = [(text(12), text(100)) for _ in range(n_batches * batch_size)]
    else:
        from embsym_lib.data import retrieval as rdata

        pairs = rdata.load_training_pairs("pydoc", rdata.pydoc_dir(), n_batches * batch_size)
    batches = []
    for b in range(n_batches):
        chunk = pairs[b * batch_size : (b + 1) * batch_size]
        batches.append([model.preprocess([q for q, _ in chunk]), model.preprocess([d for _, d in chunk])])
    return batches


def training_step(model, loss, optimizer, features) -> float:
    """Seconds for one optimizer step (forward, loss, backward, AdamW) on pre-tokenized features."""
    start = time.perf_counter()
    features = [{k: v.to(model.device) if torch.is_tensor(v) else v for k, v in f.items()} for f in features]
    loss(features, None).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench_training(encoder: str, steps: int, repeats: int, batch_size: int, max_seq_length: int = 64):
    """Step-level round robin: every batch is run once under each loss before the next batch, so load
    changes on a shared machine hit every configuration alike; median seconds per step -> examples/s."""
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from sentence_transformers.util import cos_sim

    from embsym_lib.adapters import sentence_transformers as st
    from embsym_lib.similarity import VARIANTS

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if encoder == "minilm":
        model = st.load_encoder("offline:minilm", device=device, max_seq_length=max_seq_length)
    elif encoder.startswith("random-bert-base:"):
        model = random_bert_base(encoder.split(":", 1)[1], max_seq_length, device)
    else:
        model = st.scratch_encoder(max_seq_length=max_seq_length, device=device)
    model.train()
    batches = training_batches(
        model, steps, batch_size, synthetic_text=encoder.startswith("random-bert-base:")
    )
    losses = {"stock cos_sim": MultipleNegativesRankingLoss(model, scale=20.0, similarity_fct=cos_sim)}
    for v in VARIANTS:
        losses[v] = st.retrieval_loss(model, st.retrieval_similarity(v), 20.0).to(device)
    optimizers = {
        name: torch.optim.AdamW([p for p in loss.parameters() if p.requires_grad], lr=1e-5)
        for name, loss in losses.items()
    }
    for name, loss in losses.items():  # warm-up
        training_step(model, loss, optimizers[name], batches[0])
    times: dict[str, list[float]] = {name: [] for name in losses}
    for _ in range(repeats):
        for features in batches:
            for name, loss in losses.items():
                times[name].append(training_step(model, loss, optimizers[name], features))
    rate = {name: batch_size / statistics.median(t) for name, t in times.items()}
    stock = rate["stock cos_sim"]
    return [(name, r, r / stock) for name, r in rate.items()], device


def random_bert_base(tokenizer_dir: str, max_seq_length: int, device: str):
    """A BERT-base-sized encoder (the paper's encoders' size) from random init, with the tokenizer (and
    config-free checkpoint layout) of ``tokenizer_dir``: timing needs the size, not the weights."""
    from transformers import BertConfig, BertModel

    from embsym_lib.adapters import sentence_transformers as st

    model = st.encoder_from_checkpoint(tokenizer_dir, max_seq_length=max_seq_length, device=device)
    transformer = model[0]
    transformer.model = BertModel(BertConfig(vocab_size=model.tokenizer.vocab_size)).to(device)
    from sentence_transformers.models import Pooling

    model._modules["1"] = Pooling(768, pooling_mode="mean")
    return model


def bench_search(n_queries: int, n_docs: int, dim: int, k: int, repeats: int):
    from embsym_lib.ir_metrics import exact_search
    from embsym_lib.similarity import FIXED_VARIANTS

    device = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator().manual_seed(0)
    q = torch.randn(n_queries, dim, generator=g).to(device)
    d = (torch.randn(n_docs, dim, generator=g) * torch.rand(n_docs, 1, generator=g) * 3).to(device)

    def timed(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return n_queries * n_docs / statistics.median(times)

    plain = timed(lambda: (q @ d.T).topk(k, dim=1))
    rows = [("plain matmul+topk", plain, 1.0)]
    for v in FIXED_VARIANTS:
        rate = timed(lambda v=v: exact_search(q, d, v, k=k))
        rows.append((f"exact_search {v}", rate, rate / plain))
    return rows, device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--encoder",
        default="scratch",
        help="scratch | minilm | random-bert-base:TOKENIZER_DIR (BERT-base size, random init, random text)",
    )
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows, device = bench_training(
        args.encoder, args.steps, args.repeats, args.batch_size, args.max_seq_length
    )
    print(
        f"\nTraining throughput ({args.encoder} encoder, batch {args.batch_size}, {args.steps} steps x "
        f"{args.repeats} repeats, {device}, median)"
    )
    print(f"{'loss':<16}{'examples/s':>12}{'ratio vs stock':>16}")
    for name, rate, ratio in rows:
        print(f"{name:<16}{rate:>12.1f}{ratio:>16.3f}")
    rows, device = bench_search(args.queries, args.docs, 384, 100, args.repeats)
    print(f"\nExact search ({args.queries} queries x {args.docs} docs, dim 384, top-100, {device}, median)")
    print(f"{'method':<24}{'pairs/s':>14}{'ratio vs plain':>16}")
    for name, rate, ratio in rows:
        print(f"{name:<24}{rate:>14.3e}{ratio:>16.3f}")


if __name__ == "__main__":
    main()
