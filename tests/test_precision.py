"""``precision``: an encoder's forward passes under bf16 autocast, what is computed from its outputs (the
grid's scores, the loss) in float32; fp32 leaves a model untouched; auto is bf16 only where the device
has bf16 matrix units, and the run says which it used."""

from __future__ import annotations

import pytest
import torch

from embsym_lib import schema
from embsym_lib.adapters import sentence_transformers as st
from embsym_lib.families.retrieval.spec import RetrievalParams
from embsym_lib.families.sts.spec import StsParams
from embsym_lib.runtime import compute_in, precision_of, resolve_precision
from embsym_lib.similarity import pairwise


def _mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Linear(64, 32))


def test_fp32_leaves_the_module_as_it_is():
    model = _mlp()
    assert precision_of(model) == "fp32"  # never seen by compute_in: a plain fp32 model
    assert compute_in(model, "fp32") is model
    assert not model._forward_pre_hooks and not model._forward_hooks
    assert precision_of(model) == "fp32"


@pytest.mark.parametrize("amx, expected", [(True, "bf16"), (False, "fp32"), (None, "fp32")])
def test_auto_is_bf16_only_where_the_cpu_has_bf16_matrix_units(monkeypatch, amx, expected):
    if amx is None:  # a torch without the probe: assume none
        monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    else:
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert resolve_precision("auto", "cpu") == expected
    model = compute_in(_mlp(), "auto")
    assert precision_of(model) == expected
    assert bool(model._forward_hooks) == (expected == "bf16")
    for fixed in ("fp32", "bf16"):  # an explicit choice is kept, whatever the machine
        assert resolve_precision(fixed, "cpu") == fixed


def test_auto_on_a_cuda_device_asks_torch_whether_it_has_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for supported, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda s=supported: s)
        assert resolve_precision("auto", "cuda:0") == expected


def test_bf16_computes_in_bf16_and_hands_on_float32():
    x = torch.randn(16, 64)
    reference = _mlp()(x)
    out = compute_in(_mlp(), "bf16")(x)
    assert out.dtype == torch.float32
    # bf16 matrix products: close to fp32, not equal to it (so autocast was on)
    assert not torch.equal(out, reference)
    torch.testing.assert_close(out, reference, rtol=0.05, atol=0.02)
    # and the same bits every time
    assert torch.equal(out, compute_in(_mlp(), "bf16")(x))


def test_autocast_ends_with_the_forward_pass_even_when_it_fails():
    model = compute_in(_mlp(), "bf16")
    model(torch.randn(4, 64))
    assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(RuntimeError):
        model(torch.randn(4, 3))  # wrong width: the forward raises inside autocast
    assert not torch.is_autocast_enabled("cpu")
    # what follows a forward pass (the grid's score of its outputs) is float32 arithmetic
    q, d = model(torch.randn(4, 64)), model(torch.randn(5, 64))
    assert pairwise(q, d, "dot").dtype == torch.float32
    torch.testing.assert_close(pairwise(q, d, "dot"), q @ d.T)


def test_gradients_flow_through_a_bf16_forward():
    model = compute_in(_mlp(), "bf16")
    model(torch.randn(8, 64)).square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def test_unknown_precision_is_refused_before_any_compute():
    with pytest.raises(ValueError, match="unknown precision 'fp16'; valid: fp32, bf16, auto"):
        compute_in(_mlp(), "fp16")
    for params in (RetrievalParams, StsParams):
        assert schema.validate(params, {}, "t")["precision"] == "fp32"  # the paper profile's: unchanged
        with pytest.raises(Exception, match="precision"):
            schema.validate(params, {"precision": "fp16"}, "t")


def test_a_bf16_encoder_gives_float32_embeddings_close_to_fp32_and_trains_in_float32_scores():
    params = schema.validate(
        RetrievalParams, {"encoder": "scratch", "max_seq_length": 16, "variant": "dot", "seed": 0}, "t"
    )
    texts = [f"def function_{i}(x): return x ** {i} + {i}" for i in range(12)]
    fp32, _ = st.build_encoder({**params, "device": "cpu"})
    bf16, _ = st.build_encoder({**params, "device": "cpu", "precision": "bf16"})
    assert (precision_of(fp32), precision_of(bf16)) == ("fp32", "bf16")
    a, b = st.encode_texts(fp32, texts), st.encode_texts(bf16, texts)
    assert b.dtype == torch.float32 and not torch.equal(a, b)
    torch.testing.assert_close(b.norm(dim=1), a.norm(dim=1), rtol=0.02, atol=0.0)
    # in training, the grid scores what the bf16 forward hands on outside autocast, in float32
    seen = []

    def spy(q, d):
        seen.append((q.dtype, d.dtype, torch.is_autocast_enabled("cpu")))
        return pairwise(q, d, "dot")

    loss = st.retrieval_loss(bf16, spy)
    features = [bf16.tokenize(texts[:4]), bf16.tokenize(texts[4:8])]
    loss(features, None).backward()
    assert seen == [(torch.float32, torch.float32, False)]
