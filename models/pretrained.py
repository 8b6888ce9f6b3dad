"""`pretrained:PATH_OR_ID`: a causal language model and its tokenizer, loaded with `transformers`, as a model.

Optional extra: `pip install 'membench[hf]'`. A membench family is built from a width and trained on token ids;
a pretrained model arrives with its own weights, size and tokenizer, and reads a task rendered as text
(memtasks/text.py; its scoring: runners/pretrained_eval.py). `pretrained:` names one of

    a local folder     pretrained:checkpoints/gpt2-small    (what save_pretrained wrote: config.json, the
                                                             weights, and the tokenizer's files)
    a hub id           pretrained:openai-community/gpt2     (where the machine has a connection; offline mode,
                                                             HF_HUB_OFFLINE=1, is honoured: only the cache is read)

Params (a spec's `[models.NAME] params = {...}`, `--param` of `membench check`):

    dtype                "float32" (default), "bfloat16", "float16" or "auto" (the checkpoint's own)
    revision             a branch, tag or commit of a hub id (default: the hub's default branch)
    attn_implementation  "eager", "sdpa", "flash_attention_2", ... (default: transformers' choice)
    trust_remote_code    run the checkpoint's own Python code (default false: refused)
    chat_template        wrap each rendering in the tokenizer's chat template (default false)
    rendering            "auto" (default: "plain" for a folder membench's save_model wrote, else "readable"),
                         "readable" or "plain" (memtasks/text.py)

What is checked when the name is resolved (a spec is read, `membench check` runs), each failure one line
(ConfigError), or, for a checkpoint with its own code (`auto_map`), once its params' trust_remote_code is known
(the spec expanded, the model built): the path exists; the folder (or hub entry) has a config whose architecture
is a causal LM (a saved BertForMaskedLM is refused: it does not predict the next token); it has a tokenizer, and
a fast one (scoring maps answers to tokens through its character offsets); a hub id is reachable or cached.

The model's size is its checkpoint's: `d_model` and `n_layers` are read from its config (spec sizes do not
apply). Its cost: `num_params` counted; `state_size` the KV cache (or the recurrent state) by models/hf.py's
formulas; `flops` the usual estimate 2 x non-embedding params per token plus attention's 4 x layers x T x
width per token (causal: half of the T x T scores).

    >>> is_pretrained("pretrained:checkpoints/gpt2"), is_pretrained("hf:gpt2"), source_of("pretrained:gpt2")
    (True, False, 'gpt2')
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from membench.checks import ConfigError
from membench.models.base import MemoryModel
from membench.models.hf import INSTALL, state_formula

PREFIX = "pretrained:"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}
RENDERINGS = ("auto", "readable", "plain")
SAVED_BY_MEMBENCH = "membench.json"  # written beside a model that save_model wrote: {"rendering": "plain", ...}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "vocab.txt",
                   "spiece.model")
POSITION_KEYS = ("max_position_embeddings", "n_positions", "n_ctx")  # the config's longest input, where it has one
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # "gpt2", "org/name"


def is_pretrained(name: str) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def source_of(name: str) -> str:
    """The folder or hub id of a `pretrained:` name."""
    return name[len(PREFIX):]


def transformers_module():
    """`transformers`, imported as it is (a hub id may need the network: offline mode is the user's choice)."""
    try:
        import transformers
    except ImportError:
        raise ConfigError(f"pretrained: models need the Hugging Face extra: {INSTALL}") from None
    return transformers


def local_folder(source: str) -> Path | None:
    """The folder `source` names, None for a hub id; ConfigError for a path that does not exist.

    A source is a path when it exists, or when it cannot be a hub id ("org/name" or "name"): it starts with
    ".", "/" or "~", or has more than one "/".
    """
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"pretrained:{source} is a file, not a folder; give the folder that save_pretrained "
                              f"wrote (config.json, the weights and the tokenizer's files)")
        return path
    if not _HUB_ID.match(source) or source.startswith((".", "~")):
        raise ConfigError(f"pretrained:{source}: no such folder; give the folder that save_pretrained wrote, or a "
                          f"hub id such as openai-community/gpt2")
    return None


@functools.lru_cache(maxsize=None)
def checkpoint_config(source: str, revision: str | None = None, trust_remote_code: bool = False):
    """The checkpoint's config, checked: a causal language model with a tokenizer (see the module doc)."""
    transformers = transformers_module()
    folder = local_folder(source)
    where = f"pretrained:{source}"
    if folder is not None and not (folder / "config.json").is_file():
        raise ConfigError(f"{where}: the folder has no config.json; it is not a saved model (save one with "
                          f"model.save_pretrained(folder))")
    try:
        config = transformers.AutoConfig.from_pretrained(str(folder or source), revision=revision,
                                                         trust_remote_code=trust_remote_code)
    except OSError as err:  # not cached offline, unreachable, unknown id
        raise ConfigError(f"{where}: not a local folder, and the hub did not give it ({_one_line(err)}); download "
                          f"it on a machine with a connection, or give the folder save_pretrained wrote") from None
    except ValueError as err:  # custom code without trust_remote_code, an unknown model type
        raise ConfigError(f"{where}: its config cannot be read ({_one_line(err)}); set trust_remote_code = true "
                          f"only for code you trust") from None
    _check_causal(config, where)
    if folder is not None and not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise ConfigError(f"{where}: the folder has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); save it "
                          f"beside the model with tokenizer.save_pretrained(folder)")
    return config


def _check_causal(config, where: str) -> None:
    """ConfigError unless `config` describes a causal (next-token) language model."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as CAUSAL

    causal_classes = {c for v in CAUSAL.values() for c in ([v] if isinstance(v, str) else v)}
    architectures = list(getattr(config, "architectures", None) or [])
    causal = any(a in causal_classes or a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures) \
        if architectures else config.model_type in CAUSAL
    if getattr(config, "is_encoder_decoder", False) or not causal:
        what = ", ".join(architectures) or config.model_type
        raise ConfigError(f"{where} is a {what}, not a causal language model (membench scores next-token "
                          f"predictions); give a model saved from AutoModelForCausalLM")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:200]


def load_tokenizer(source: str, revision: str | None = None, trust_remote_code: bool = False, *,
                   where: str | None = None, fast: bool = True):
    """The checkpoint's tokenizer: a fast one (its character offsets map answers to tokens), or any with `fast`
    False (counting tokens needs no offsets). Its errors name `where` (default pretrained:SOURCE)."""
    transformers = transformers_module()
    where = where or f"pretrained:{source}"
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(local_folder(source) or source),
                                                               revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError(f"{where}: its tokenizer cannot be loaded ({_one_line(err)}); save one into its "
                          f"folder with tokenizer.save_pretrained(folder)") from None
    if fast and not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"{where}: its tokenizer is not a fast tokenizer, so it gives no character offsets; save "
                          f"a tokenizer.json (tokenizers library) beside the model")
    return tokenizer


def saved_by_membench(source: str) -> dict:
    """What save_model wrote beside the model ({"rendering": "plain", "task": ...}), {} for any other."""
    folder = local_folder(source)
    path = folder / SAVED_BY_MEMBENCH if folder is not None else None
    return json.loads(path.read_text()) if path is not None and path.is_file() else {}


def max_positions(config) -> int | None:
    """The longest input the checkpoint's positions allow, None where it sets none (a recurrent model)."""
    return next((int(getattr(config, k)) for k in POSITION_KEYS if getattr(config, k, None)), None)


def _first_attr(config, names: tuple[str, ...]) -> int:
    return int(next((getattr(config, n) for n in names if getattr(config, n, None)), 0))


def checkpoint_size(config) -> tuple[int, int]:
    """(d_model, n_layers) of a checkpoint, read from its config (0 where it names neither)."""
    return (_first_attr(config, ("hidden_size", "n_embd", "d_model")),
            _first_attr(config, ("num_hidden_layers", "n_layer", "num_layers")))


class PretrainedModel(MemoryModel):
    """A checkpoint's causal LM (`self.lm`) and tokenizer (`self.tokenizer`); `pretrained_model_class(source)`
    makes the class of one source. The trial's vocab_size, d_model and n_layers are ignored (the checkpoint's
    own are used): a pretrained model reads text, not the task's ids."""

    source: ClassVar[str] = ""
    analytic_flops = True
    compile_friendly = False

    def __init__(self, vocab_size: int = 0, d_model: int = 0, n_layers: int = 0, *, dtype: str = "float32",
                 revision: str | None = None, attn_implementation: str | None = None,
                 trust_remote_code: bool = False, chat_template: bool = False, rendering: str = "auto") -> None:
        nn.Module.__init__(self)
        where = f"pretrained:{self.source}"
        if dtype not in DTYPES:
            raise ConfigError(f"{where}: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if rendering not in RENDERINGS:
            raise ConfigError(f"{where}: rendering must be one of {', '.join(RENDERINGS)}, got {rendering!r}")
        config = checkpoint_config(self.source, revision, trust_remote_code)
        self.tokenizer = load_tokenizer(self.source, revision, trust_remote_code)
        if chat_template and not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError(f"{where}: chat_template = true, but its tokenizer has no chat template; set "
                              f"chat_template = false")
        options = {"revision": revision, "trust_remote_code": trust_remote_code, "dtype": DTYPES[dtype]}
        if attn_implementation is not None:
            options["attn_implementation"] = attn_implementation
        transformers = transformers_module()
        transformers.utils.logging.disable_progress_bar()  # a sweep shows its own progress
        try:
            if torch.empty(0).device.type == "meta":  # counted, not run (the cost model, `membench plan`)
                self.lm = transformers.AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
            else:
                self.lm = transformers.AutoModelForCausalLM.from_pretrained(
                    str(local_folder(self.source) or self.source), **options)
        except (OSError, ValueError) as err:
            raise ConfigError(f"{where}: its weights cannot be loaded ({_one_line(err)})") from None
        self.lm.eval()
        self.config = config
        self.d_model, self.n_layers = checkpoint_size(config)
        self.vocab_size = int(getattr(config, "vocab_size", 0) or len(self.tokenizer))
        self.max_positions = max_positions(config)
        self.chat_template = chat_template
        self.rendering = rendering if rendering != "auto" else saved_by_membench(self.source).get("rendering",
                                                                                                  "readable")
        self.state_kind, self._state = state_formula(config.model_type, config)

    @classmethod
    def checkpoint_size(cls, revision: str | None = None, trust_remote_code: bool = False) -> tuple[int, int]:
        """(d_model, n_layers) of this checkpoint, from its config alone (nothing is loaded)."""
        return checkpoint_size(checkpoint_config(cls.source, revision, trust_remote_code))

    def logits(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) int64 token ids of the checkpoint's tokenizer -> (B, K, V) float32 next-token logits at the K
        `positions` (int64, sorted; None: all T). The head runs only there: full logits of a 150k-word vocabulary
        at 4,096 tokens would take 2.4 GB per sequence."""
        keep = 0 if positions is None else positions  # transformers' logits_to_keep: 0 means every position
        return self.lm(input_ids=input_ids, use_cache=False, logits_to_keep=keep).logits.float()  # (B, K, V)

    def read_prefix(self, input_ids: torch.Tensor):
        """(1, P) int64 -> the KV cache after reading them (a transformers Cache), or None where the model's cache
        cannot be cut back to a shorter prefix (a recurrent state)."""
        cache = self.lm(input_ids=input_ids, use_cache=True, logits_to_keep=1).get("cache")
        return cache if cache is not None and getattr(cache, "is_croppable", False) else None

    def read_on(self, cache, input_ids: torch.Tensor) -> torch.Tensor:
        """(C, m) int64 read after the C rows of `cache` -> (C, m, V) float32 next-token logits; the cache grows."""
        return self.lm(input_ids=input_ids, cache=cache, use_cache=True).logits.float()  # (C, m, V)

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        raise ConfigError("a pretrained: model reads text, not token ids: it is fine-tuned by "
                          "runners/pretrained_train.py")

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) int64 -> (B, T, V) logits."""
        return self.logits(tokens)

    # --- what it costs ---------------------------------------------------------------------------
    def num_params(self) -> int:
        return sum(p.numel() for p in self.lm.parameters())

    def state_size(self, seq_len: int) -> int | None:
        """Floats of KV cache (or recurrent state) per sequence of `seq_len` tokens, None without a formula."""
        return None if self._state is None else int(self._state(seq_len))

    def embedding_params(self) -> int:
        embeddings = [self.lm.get_input_embeddings(), self.lm.get_output_embeddings()]
        seen = {id(p): p for m in embeddings if m is not None for p in m.parameters()}  # tied: counted once
        return sum(p.numel() for p in seen.values())

    def flops(self, batch_size: int, seq_len: int) -> int:
        """Forward FLOPs of (batch_size, seq_len) tokens: 2 x non-embedding params + the output head per token,
        plus the attention scores and mix (`attention_flops`)."""
        tokens = batch_size * seq_len
        return 2 * (self.num_params() - self.embedding_params()) * tokens + self.head_flops(tokens) \
            + self.attention_flops(batch_size, seq_len)

    def attention_flops(self, batch_size: int, seq_len: int) -> int:
        """Q K^T and the weighted sum of V over the causal half of the T x T scores: 2 x 2 x T^2 / 2 x width
        per layer and sequence (0 for a recurrent checkpoint, which has no state formula of a KV cache)."""
        if self.state_kind != "KV cache":
            return 0
        return 2 * batch_size * seq_len * seq_len * self.d_model * self.n_layers

    def memory_flops(self, batch_size: int, seq_len: int) -> int:
        return 0


def own_code_model_type(source: str) -> str | None:
    """The model type of a checkpoint that brings its own Python code (its config's `auto_map` names a config
    class for a model type transformers does not have): it loads only with trust_remote_code. None for any
    other checkpoint, or one whose config cannot be read. Nothing is imported or run."""
    transformers = transformers_module()
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    try:
        raw, _ = transformers.PretrainedConfig.get_config_dict(str(local_folder(source) or source))
    except (OSError, ValueError):
        return None
    model_type = raw.get("model_type")
    own = "AutoConfig" in (raw.get("auto_map") or {}) and model_type not in CONFIG_MAPPING
    return str(model_type) if own else None


@functools.lru_cache(maxsize=None)
def pretrained_model_class(source: str) -> type[PretrainedModel]:
    """The class of `pretrained:source`, its checkpoint checked (checkpoint_config, load_tokenizer with the
    default params) before anything is built or run. A checkpoint with its own code is checked when its params
    are known, with their trust_remote_code (when the spec is expanded, or the model built): its cost class is
    unknown until then."""
    try:
        config = checkpoint_config(source)
    except ConfigError:
        model_type = own_code_model_type(source)
        if model_type is None:
            raise
        return type(f"Pretrained_{model_type}", (PretrainedModel,), {
            "__module__": __name__, "source": source, "name": f"{PREFIX}{source}", "cost_class": "unknown",
            "memory_mechanism": f"pretrained {model_type} (its own code: loads with trust_remote_code = true)",
        })
    load_tokenizer(source)
    d_model, n_layers = checkpoint_size(config)
    kind, _ = state_formula(config.model_type, config)
    cost_class = {"KV cache": "O(n^2)", "conv + SSM state": "O(n)", "token shifts + WKV state": "O(n)"}.get(kind,
                                                                                                         "unknown")
    return type(f"Pretrained_{config.model_type}", (PretrainedModel,), {
        "__module__": __name__, "source": source, "name": f"{PREFIX}{source}", "cost_class": cost_class,
        "memory_mechanism": f"pretrained {config.model_type} ({d_model} wide, {n_layers} layers; {kind})",
    })


# --- save_model: a trained hf: family as a folder that pretrained: loads ------------------------------------
def word_level_tokenizer(words: list[str]):
    """A fast tokenizer whose token i is `words[i]`, split on whitespace, with no special tokens added (plain
    mode's text is exactly the task's ids). An unknown word maps to "[UNK]", an id past the model's vocabulary.

        >>> tokenizer = word_level_tokenizer(["0", "1", "w", "r"])
        >>> tokenizer("w 1 r", add_special_tokens=True)["input_ids"]
        [2, 1, 3]
    """
    import tokenizers
    from tokenizers import models, pre_tokenizers

    transformers = transformers_module()
    vocab = {word: i for i, word in enumerate(words)}
    vocab.setdefault("[UNK]", len(vocab))
    backend = tokenizers.Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")


def save_as_pretrained(model, words: list[str], folder: Path, about: dict) -> Path:
    """Write an hf: family's model (models/hf.py: a transformers backbone and membench's head) to `folder` as a
    causal LM that AutoModelForCausalLM loads: the backbone's weights under the LM's base model, the head as its
    (untied) output embedding; beside it a word-level tokenizer of `words` (token id -> word, plain mode's
    vocabulary) and SAVED_BY_MEMBENCH with `about` and "rendering": "plain". The folder appears whole: it is
    written beside `folder` first and renamed into place. Returns `folder`.

    ConfigError for a model of any other family (only a transformers model has a Hugging Face form).
    """
    import shutil
    import tempfile

    from membench.models.hf import HFModel

    if not isinstance(model, HFModel):
        raise ConfigError(f"save_model writes Hugging Face folders of hf: models only, not of {model.name}; "
                          f"set save_model = false for it")
    transformers = transformers_module()
    config = model.config.__class__.from_dict(model.config.to_dict())
    config.tie_word_embeddings, config.architectures = False, None
    lm = transformers.AutoModelForCausalLM.from_config(config)
    getattr(lm, lm.base_model_prefix).load_state_dict(model.backbone.state_dict())
    with torch.no_grad():
        lm.get_output_embeddings().weight.copy_(model.head.weight)  # (V, D)
    words = [*words, *(f"<unused{i}>" for i in range(len(words), model.vocab_size))]
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        lm.save_pretrained(staging)
        word_level_tokenizer(words).save_pretrained(staging)
        (staging / SAVED_BY_MEMBENCH).write_text(json.dumps({"rendering": "plain", **about}, indent=1,
                                                            sort_keys=True, default=str))
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
