"""hf:MODEL_TYPE models (models/hf.py): tiny transformers configs through the contract, a sweep and their costs.
Skipped when the optional extra (transformers) is absent, except the test of the message that says so."""

from __future__ import annotations

import logging
import sys
import textwrap

import pandas as pd
import pytest
import torch

from membench.checks import ConfigError
from membench.runners.contract import check_model
from tests.helpers import run_cli, undo_plugin_side_effects  # noqa: F401 (autouse)

try:
    import transformers  # noqa: F401
except ImportError:
    transformers = None
needs_hf = pytest.mark.skipif(transformers is None, reason="needs the hf extra: pip install 'membench[hf]'")
TYPES = ["gpt2", "llama", "mamba", "rwkv"]  # two attention types, two recurrent ones
PASSING = [*TYPES, "mamba2", "qwen3_next"]  # every type the manual says passes `membench check`



def test_without_the_extra_hf_names_say_how_to_install_it(monkeypatch, capsys):
    from membench.models import hf

    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'membench\[hf\]'"):
        hf.hf_model_class("gpt2")
    code, _, err = run_cli(capsys, "check", "hf:bert_like_nothing")
    assert code == 2 and "membench[hf]" in err and err.count("\n") == 1


@needs_hf
@pytest.mark.slow
@pytest.mark.parametrize("model_type", PASSING)
def test_tiny_configs_pass_the_model_contract(model_type):
    rows = check_model(f"hf:{model_type}")
    failed = [f"{r.name}: {r.detail}" for r in rows if not r.ok]
    assert not failed, failed
    state = next(r for r in rows if r.name == "state size")
    assert state.status == "pass"  # each of these has a formula ...
    assert ("KV cache" if model_type in ("gpt2", "llama") else "state") in state.detail  # ... and says which


def _cache_floats(cache) -> int:
    """Floats per sequence held by a transformers cache (a Cache with layers, or RWKV's list of tensors)."""
    def tensors(value):
        if torch.is_tensor(value) and value.is_floating_point():  # not position counters (transformers >= 5.2x)
            yield value
        elif isinstance(value, dict):
            for v in value.values():
                yield from tensors(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                yield from tensors(v)

    parts = [vars(layer) for layer in cache.layers] if hasattr(cache, "layers") else cache
    return sum(t.numel() for t in tensors(parts))


@needs_hf
@pytest.mark.parametrize("model_type", TYPES)
def test_state_size_formula_matches_the_cache_transformers_keeps(model_type):
    from membench.models import build_model

    model = build_model(f"hf:{model_type}", 16, d_model=32, n_layers=2).eval()
    out = model.backbone(input_ids=torch.randint(0, 16, (1, 24)), use_cache=True)
    cache = getattr(out, "past_key_values", None) or getattr(out, "state", None)
    kept, formula = _cache_floats(cache), model.state_size(24)
    if model_type == "mamba":  # transformers keeps conv_kernel inputs; the next output needs conv_kernel - 1
        assert kept - formula == 2 * model.config.intermediate_size
    else:
        assert kept == formula
    assert model.state_kind == {"gpt2": "KV cache", "llama": "KV cache", "mamba": "conv + SSM state",
                                "rwkv": "token shifts + WKV state"}[model_type]


@needs_hf
def test_config_mapping_overrides_and_dropout():
    from membench.models import build_model, family_params

    gpt2 = build_model("hf:gpt2", 16, d_model=32, n_layers=3)
    cfg = gpt2.config
    assert (cfg.n_embd, cfg.n_layer, cfg.vocab_size, cfg.n_head, cfg.n_inner) == (32, 3, 16, 2, 128)
    assert cfg.attn_pdrop == cfg.resid_pdrop == cfg.embd_pdrop == 0.0 and cfg.bos_token_id is None
    gpt2.train()
    x = torch.randint(0, 16, (2, 9))
    assert torch.equal(gpt2(x), gpt2(x))  # no dropout: a train-mode forward is deterministic
    llama = build_model("hf:llama", 16, d_model=32, num_attention_heads=4, mlp_ratio=2)
    assert (llama.config.num_attention_heads, llama.config.head_dim, llama.config.intermediate_size) == (4, 8, 64)
    assert "num_attention_heads" in family_params("hf:llama") and "hidden_size" not in family_params("hf:llama")
    with pytest.raises(ConfigError, match="unknown param 'num_attention_head'"):
        build_model("hf:llama", 16, num_attention_head=4)
    with pytest.raises(ConfigError, match="did you mean hf:llama"):
        build_model("hf:lama", 16)


@needs_hf
def test_a_download_attempt_is_one_line(monkeypatch):
    from huggingface_hub.errors import OfflineModeIsEnabled

    from membench.models import build_model

    def offline(*args, **kwargs):
        raise OfflineModeIsEnabled("Cannot reach https://huggingface.co: offline mode is enabled")

    monkeypatch.setattr(transformers.AutoConfig, "for_model", offline)
    with pytest.raises(ConfigError, match="hf:gpt2 tried to download .*builds hf: models offline"):
        build_model("hf:gpt2", 16)


@needs_hf
def test_fallback_kernel_warnings_are_summarised_once(capsys):
    from membench.models import hf

    hf.transformers_module()
    logger = logging.getLogger("transformers.models.fake")
    for _ in range(3):
        logger.warning("`fake_scan_fn` is falling back to its reference PyTorch implementation because "
                       "`fake_kernels` is not installed.")
    err = capsys.readouterr().err
    assert err.count("fake_scan_fn") == 1 and "falling back" not in err and "further such warnings" in err


@needs_hf
@pytest.mark.slow
def test_a_tiny_cpu_sweep_of_three_types(tmp_path, capsys):
    spec = tmp_path / "hf.toml"
    spec.write_text(textwrap.dedent("""
        tasks = ["copy"]
        lengths = [8]
        steps = 4
        eval_every = 2
        eval_sequences = 16
        batch_size = 8
        d_model = 32
        device = "cpu"
        [models."hf:gpt2"]
        [models.llama4]
        model = "hf:llama"
        params = { num_attention_heads = 4 }
        [models."hf:mamba"]
    """))
    code, out, err = run_cli(capsys, "run", "--spec", str(spec), "--out", str(tmp_path / "out"), "--quiet")
    assert code == 0, err
    runs = pd.read_csv(tmp_path / "out" / "runs.csv")
    assert set(runs["model"]) == {"hf:gpt2", "hf:llama", "hf:mamba"} and (runs["status"] == "ok").all(), \
        runs[["model", "status", "error"]]
    assert (runs["flops_per_step"] > 0).all() and runs["state_size"].notna().all()
    by_model = runs.drop_duplicates("model").set_index("model")
    assert by_model.loc["hf:llama", "attention_flops_share"] > 0
    assert by_model.loc["hf:mamba", "attention_flops_share"] == 0


@needs_hf
def test_gpt2_trained_past_its_positions_is_an_error_row_not_a_crash():
    from membench.runners.trial import EvalSlice, TrialConfig, run_trial

    config = TrialConfig("copy", {}, "hf:gpt2", {"n_positions": 8}, d_model=16, n_layers=1, train_len=16, seed=0,
                         lr=1e-3, batch_size=4, steps=2, eval_slices=(EvalSlice("L16", 16, 4),))
    payload = run_trial(config)
    assert payload["runs"][0]["status"] == "error" and "Traceback" in payload["traceback"]
