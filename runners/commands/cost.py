"""`membench cost`: time, memory and FLOPs of one training step of each family as the length grows.

    membench cost --models transformer,lstm,ssm --lengths 128,256,512,1024,2048 --out results/cost

writes cost.csv (one row per family and length), cost_fit.csv (fitted exponents of the per-sequence
costs) and the charts cost_{time,memory,flops,attention_share}.{png,svg}. See runners/cost/measure.py for what
is measured and runners/cost/fit.py for the fit. Every argument is checked before anything is written.
"""

from __future__ import annotations

from pathlib import Path

import torch

from membench.checks import ConfigError, check_limit
from membench.models import count_params, list_models, model_class
from membench.runners.cost.measure import (
    DEFAULT_BATCH_TOKENS,
    DEFAULT_MAX_LENGTH,
    VOCAB_SIZE,
    CostConfig,
    length_ladder,
    resolve_device,
    run_cost,
)
from membench.runners.errors import UsageError
from membench.runners.lock import DirectoryLock
from membench.runners.parsing import int_list, name_list, out_dir, positive_int

HELP = "measure step time, peak memory and FLOPs of each family against sequence length"


def add_arguments(parser) -> None:
    parser.add_argument("--models", default="all", help="comma list of families, or 'all' (default all)")
    parser.add_argument("--lengths", help="comma list of lengths (default: 128, 256, ... up to --max-length)")
    parser.add_argument("--max-length", help="longest length of the default ladder "
                        f"(default {DEFAULT_MAX_LENGTH['cpu']} on cpu, {DEFAULT_MAX_LENGTH['cuda']} on cuda)")
    parser.add_argument("--batch-tokens", help="tokens per step; batch size = max(1, tokens // length) "
                        f"(default {DEFAULT_BATCH_TOKENS['cpu']} on cpu, {DEFAULT_BATCH_TOKENS['cuda']} on cuda)")
    parser.add_argument("--d-model", default="64", help="width (default 64)")
    parser.add_argument("--n-layers", default="2", help="layers (default 2)")
    parser.add_argument("--repeats", default="3", help="timed steps per point; the median is kept (default 3)")
    parser.add_argument("--time-cap", default="20", help="seconds a step may take: two consecutive slower "
                        "steps stop the family with status timeout (default 20)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default cuda when available, else cpu)")
    parser.add_argument("--threads", help="torch's CPU threads (default: torch's, one per core); on a machine "
                        "shared with other jobs, 1 avoids threads waiting on each other")
    parser.add_argument("--out", required=True, type=out_dir, help="output directory")


def positive_seconds(text: str, label: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{label} must be a positive number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise UsageError(f"{label} must be a positive number of seconds, got {text!r}")
    return value


def parse_models(text: str) -> tuple[str, ...]:
    """'all' -> every registered family; 'a,b' -> ('a', 'b') after checking each name exists."""
    names = list_models() if text.strip() == "all" else name_list(text)
    if not names:
        raise UsageError("--models needs at least one family, e.g. --models transformer,lstm (or all)")
    for name in names:
        model_class(name)  # unknown names raise with the closest valid ones
    return tuple(dict.fromkeys(names))


def parse_lengths(lengths: str | None, max_length: str | None, device: str) -> tuple[int, ...]:
    """--lengths as given (every one <= --max-length when both are given), else the default ladder."""
    cap = positive_int(max_length, "--max-length", "length") if max_length is not None else None
    if lengths is None:
        return tuple(length_ladder(cap or DEFAULT_MAX_LENGTH[device.split(":")[0]]))
    values = sorted(set(int_list(lengths, "--lengths", "length")))
    if cap is not None and values[-1] > cap:
        raise UsageError(f"--lengths has {values[-1]}, above --max-length {cap}; drop it or raise the cap")
    return tuple(values)


def build_config(args) -> CostConfig:
    """Every argument checked, nothing written: a bad one raises UsageError or ConfigError."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    resolve_device(device)
    kind = device.split(":")[0]  # the defaults are per device type
    models = parse_models(args.models)
    d_model = positive_int(args.d_model, "--d-model", "d_model")
    n_layers = positive_int(args.n_layers, "--n-layers", "n_layers")
    for name in models:  # a width the family cannot take (e.g. not divisible by its heads) fails here
        try:  # counted on the meta device: a too-large size fails without allocating it
            check_limit(f"model {name} at --d-model {d_model} --n-layers {n_layers}: its parameter count",
                        count_params(name, VOCAB_SIZE, d_model, n_layers), "params")
        except ConfigError as err:
            raise UsageError(f"model {name} cannot be built with --d-model {d_model} --n-layers {n_layers}: "
                             f"{err}") from None
    out = Path(args.out)
    if out.is_symlink() and not out.exists():
        raise UsageError(f"--out {args.out} is a symbolic link to a path that does not exist")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out} exists and is not a directory")
    return CostConfig(
        models=models,
        lengths=parse_lengths(args.lengths, args.max_length, device),
        batch_tokens=(positive_int(args.batch_tokens, "--batch-tokens", "batch_tokens")
                      if args.batch_tokens is not None else DEFAULT_BATCH_TOKENS[kind]),
        d_model=d_model,
        n_layers=n_layers,
        repeats=positive_int(args.repeats, "--repeats", "repeats"),
        time_cap=positive_seconds(args.time_cap, "--time-cap"),
        device=device,
        threads=positive_int(args.threads, "--threads", "cpu_threads") if args.threads is not None else None,
    )


def run(args) -> int:
    config = build_config(args)
    out = Path(args.out)
    print(f"cost: {len(config.models)} families x lengths {', '.join(map(str, config.lengths))} on "
          f"{config.device}, {config.batch_tokens} tokens per step, d_model={config.d_model}, "
          f"n_layers={config.n_layers}, {config.threads or torch.get_num_threads()} CPU threads")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create --out {out}: {err.strerror or err}") from None
    with DirectoryLock(out):  # one writer per directory; fails here when it is not writable
        try:
            _, fits, written = run_cost(config, out)
        except OSError as err:
            raise UsageError(f"cannot write in {out}: {err.strerror or err}") from None
    print("\nexponents of cost per sequence (1 = O(n), 2 = O(n^2)):")
    print(fits.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"\nwrote {len(written)} files to {out}: " + ", ".join(p.name for p in written))
    return 0
