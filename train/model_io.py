"""Loading the model directory: checks, tokenizer, the policy (LoRA, checkpointing, FSDP2), final/.

``--model`` is a causal-LM directory or a LoRA adapter directory (peft) whose base model is
a local directory: training then continues that adapter. With ``--lora-r R`` the policy is
the base model with fresh adapters, and the reference is the same model with its adapters
disabled (``model.disable_adapter()``), so no second copy is ever loaded.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from prefstream.errors import PrefstreamError

FIX = "pass a local transformers causal-LM directory, e.g. one made by `prefstream tiny-model --out DIR`"
# Attention and MLP projection names across the common families (Llama, Qwen2, Gemma, Mistral,
# Phi, GPT-2, Falcon, GPT-NeoX); LoRA targets default to those the model has.
PROJECTIONS = (
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "qkv_proj", "gate_up_proj",
    "c_attn", "c_proj", "c_fc", "query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h", "fc1", "fc2",
)  # fmt: skip


@dataclass(frozen=True)
class ModelSource:
    base: Path  # the causal-LM directory (the reference)
    adapter: Path | None = None  # a LoRA adapter to continue, trained on ``base``


def resolve_model(path: str | Path) -> ModelSource:
    """The base model (and adapter) behind ``--model``; one-line errors for anything else."""
    path = Path(path)
    adapter_config = path / "adapter_config.json"
    if adapter_config.is_file() and not (path / "config.json").is_file():
        base = json.loads(adapter_config.read_text()).get("base_model_name_or_path")
        if not base or not (Path(base) / "config.json").is_file():
            raise PrefstreamError(
                f"{path} is a LoRA adapter whose base model ({base or 'not named'}) is not a local model directory; "
                "put the base model at that path (adapter_config.json's base_model_name_or_path), then pass the "
                "adapter as --model"
            )
        check_causal_lm(base)
        return ModelSource(Path(base), path)
    check_causal_lm(path)
    return ModelSource(path)


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


def lora_targets(base: Path, requested: tuple[str, ...] | None) -> list[str]:
    """The module names LoRA wraps, checked against the model's Linear layers (built on the meta device)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base))
    linear = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    linear.discard("lm_head")
    if requested:
        missing = sorted(set(requested) - linear)
        if missing:
            raise PrefstreamError(
                f"--lora-targets {','.join(missing)}: no such Linear module in {base}; "
                f"it has {','.join(sorted(linear))}"
            )
        return list(requested)
    targets = [name for name in PROJECTIONS if name in linear]
    if not targets:
        raise PrefstreamError(
            f"--lora-r: {base} has none of the usual attention / MLP projections; name its Linear modules with "
            f"--lora-targets (it has {','.join(sorted(linear)) or 'none'})"
        )
    return targets


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


def load_policy(source: ModelSource, settings, runtime, targets: list[str] | None):
    """The policy in ``runtime.dtype`` on its device: dropout off (as TRL), LoRA, gradient checkpointing."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(source.base, dtype=runtime.dtype)
    for module in model.modules():  # before LoRA, so --lora-dropout stays
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    if source.adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, source.adapter, is_trainable=True)
    elif settings.lora_r:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
            target_modules=targets, task_type="CAUSAL_LM",
        )  # fmt: skip
        model = get_peft_model(model, config)
    if settings.gradient_checkpointing:
        causal_lm(model).activation_checkpointing_enable({"use_reentrant": False})
        model.config.use_cache = False
    return model.to(runtime.device)


def is_lora(model) -> bool:
    return hasattr(model, "disable_adapter")


def causal_lm(model):
    """The transformers model inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if is_lora(model) else model


def shard(scorer, mesh) -> None:
    """FSDP2: ``fully_shard`` each transformer block, then the root: the completion scorer around the policy.

    The scorer is the root because it is what runs forward (it calls the decoder and the LM
    head itself), so the root's parameters (embeddings, final norm, head, tied or not) are
    gathered around every scoring pass; generation gathers them explicitly (:func:`gathered`).
    """
    from torch.distributed.fsdp import fully_shard

    blocks = set(getattr(causal_lm(scorer.model), "_no_split_modules", None) or [])
    for module in scorer.model.modules():
        if type(module).__name__ in blocks:
            fully_shard(module, mesh=mesh)
    fully_shard(scorer, mesh=mesh)


@contextlib.contextmanager
def gathered(scorer):
    """The root's parameters unsharded for calls that bypass its forward (``generate``); no-op without FSDP."""
    if not hasattr(scorer, "unshard"):
        yield
        return
    scorer.unshard()
    try:
        yield
    finally:
        scorer.reshard()


def full_state_dict(model, runtime) -> dict | None:
    """The whole (unsharded) state dict on the main process, on CPU; None on the others."""
    if not runtime.fsdp:
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=is_lora(model))
    return get_model_state_dict(model, options=options)


def save_model(model, tokenizer, path: Path, runtime) -> None:
    """Model (a LoRA run: the adapter alone) and tokenizer, loadable with from_pretrained.

    Every process calls it (FSDP gathers the shards); the main process writes.
    """
    from .reference import follow_umask

    state = full_state_dict(model, runtime)
    if runtime.is_main:
        model.save_pretrained(path, state_dict=state) if state is not None else model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        follow_umask(path)


def merge_adapter(source: ModelSource, adapter: Path, out: Path, tokenizer, dtype: torch.dtype) -> None:
    """Base + adapter merged into plain weights at ``out`` (loads the base once more, on CPU)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from .reference import follow_umask

    base = AutoModelForCausalLM.from_pretrained(source.base, dtype=dtype)
    merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
    follow_umask(out)
