"""`membench models`: every registered family with its params, size, state size, cost class and source.

A family registered by a plugin (a `--include` folder or an installed entry point) shows where it came from;
a model that declares no state size shows "unknown".
"""

from __future__ import annotations

import torch

from membench.models import MODELS, build_model, family_params, list_models, model_class
from membench.runners.parsing import add_include_flag, positive_int
from membench.runners.reporting.text import count, text_table

HELP = "list the model families: params, parameter count, state size, cost class, source, memory mechanism"


def add_arguments(parser) -> None:
    parser.add_argument("--vocab-size", default="64", help="vocabulary used to count parameters (default 64)")
    parser.add_argument("--d-model", default="64", help="width (default 64)")
    parser.add_argument("--n-layers", default="2", help="layers (default 2)")
    parser.add_argument("--length", default="1024", help="length at which state size is shown (default 1024)")
    add_include_flag(parser)


def run(args) -> int:
    vocab = positive_int(args.vocab_size, "--vocab-size", "vocab_size")
    d_model = positive_int(args.d_model, "--d-model", "d_model")
    n_layers = positive_int(args.n_layers, "--n-layers", "n_layers")
    length = positive_int(args.length, "--length", "length")
    header = ("model", "cost", "params", f"state@{length}", "source", "family params (defaults)",
              "memory mechanism")
    rows = []
    for name in list_models():
        with torch.device("meta"):  # counts and sizes only: nothing is allocated, whatever the width
            model = build_model(name, vocab, d_model=d_model, n_layers=n_layers)
        params = ", ".join(f"{k}={v!r}" for k, v in family_params(name).items()) or "-"
        rows.append((name, model_class(name).cost_class, f"{model.num_params():,}",
                     count(model.state_size(length), missing="unknown"), MODELS.source(name), params,
                     model.memory_mechanism))
    print(f"d_model={d_model}, n_layers={n_layers}, vocab_size={vocab}; state = floats carried per sequence")
    print(text_table(header, rows))
    return 0
