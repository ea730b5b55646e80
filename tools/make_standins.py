"""Tiny random stand-ins for the paper profile's hub checkpoints, for a GPU check on a machine with no
network: ``python tools/make_standins.py DIR`` writes DIR/facebook/contriever (a 2-layer BERT with
MiniLM's tokenizer) and DIR/google/flan-t5-large (the offline RAG reader's tiny T5 with the same tokenizer), laid out as
``model_dir`` expects (model_dir/<hub name>). Their scores mean nothing: they exercise the code path."""

import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from embsym_lib.adapters.sentence_transformers import offline_minilm_path
from embsym_lib.families.retrieval.rag import tiny_t5

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
t5 = tiny_t5(tokenizer)

for name, model in (("facebook/contriever", bert), ("google/flan-t5-large", t5)):
    model.save_pretrained(out / name)
    tokenizer.save_pretrained(out / name)
    print(f"wrote {out / name}")
