"""Tiny random stand-ins for the paper profile's hub checkpoints, for a GPU check on a machine with no
network: ``python tools/make_standins.py DIR`` writes DIR/facebook/contriever (a 2-layer BERT with
MiniLM's tokenizer) and DIR/google/flan-t5-large (a 2-layer T5 with the same tokenizer), laid out as
``model_dir`` expects (model_dir/<hub name>). Their scores mean nothing: they exercise the code path."""

import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig, BertModel, T5Config, T5ForConditionalGeneration

from embsym_lib.adapters.sentence_transformers import offline_minilm_path

out = Path(sys.argv[1])
tokenizer = AutoTokenizer.from_pretrained(str(offline_minilm_path()))
torch.manual_seed(0)
bert = BertModel(
    BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
)
t5 = T5ForConditionalGeneration(
    T5Config(
        vocab_size=tokenizer.vocab_size,
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
)
for name, model in (("facebook/contriever", bert), ("google/flan-t5-large", t5)):
    model.save_pretrained(out / name)
    tokenizer.save_pretrained(out / name)
    print(f"wrote {out / name}")
