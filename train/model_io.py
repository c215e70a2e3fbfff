"""Loading the model directory: check it is a causal LM, then the tokenizer and the weights."""

from __future__ import annotations

from pathlib import Path

import torch

from prefstream.errors import PrefstreamError

FIX = "pass a local transformers causal-LM directory, e.g. one made by `prefstream tiny-model --out DIR`"


def check_causal_lm(path: str | Path) -> None:
    """Fail with one line unless ``path`` holds a config of a causal-LM architecture."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    path = Path(path)
    if not (path / "config.json").is_file():
        raise PrefstreamError(f"{path} has no config.json, so it is not a model directory; {FIX}")
    try:
        config = AutoConfig.from_pretrained(path)
    except (ValueError, OSError) as exc:
        raise PrefstreamError(f"{path}: unreadable model config ({str(exc).splitlines()[0]}); {FIX}") from None
    causal_classes = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    architectures = config.architectures or []
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or (
        architectures and not causal_classes.intersection(architectures)
    ):
        what = ", ".join(architectures) or config.model_type
        raise PrefstreamError(f"{path} holds a {what}, not a causal language model; {FIX}")


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (ValueError, OSError) as exc:
        raise PrefstreamError(f"{path}: no usable tokenizer ({str(exc).splitlines()[0]}); {FIX}") from None
    if tokenizer.eos_token is None:
        raise PrefstreamError(f"{path}: the tokenizer has no EOS token, which completions end with; {FIX}")
    if tokenizer.pad_token is None:  # TRL's fallback; padding is masked out anyway
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str | Path, device: torch.device):
    """fp32 weights (bf16 comes from autocast on CUDA), dropout off as in TRL's trainers."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model
