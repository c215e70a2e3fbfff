"""Losses and log-probs: literal values, an independent re-computation, and TRL's own trainers."""

from __future__ import annotations

import math
import os

import pytest
import torch

from prefstream.tests.train_helpers import kto_export, pair_export, perturbed_copy, shared_tiny_model
from prefstream.train.data import batch_plan, collate, encode_split, kl_partners
from prefstream.train.logprobs import CompletionLogps
from prefstream.train.losses import dpo_loss, ipo_loss, kl_estimate, kto_loss, orpo_loss, simpo_loss

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # TRL is the oracle here; its experimental trainers are meant
t = torch.tensor


# ---- literal values ------------------------------------------------------------------------
# chosen / rejected log-probs -10 / -12 against a reference at -11 / -11: log-ratios +1 / -1.


@pytest.mark.parametrize(
    ("beta", "label_smoothing", "expected"),
    [
        (0.5, 0.0, 0.31326168751822286),  # -log σ(1)
        (0.5, 0.1, 0.9 * 0.31326168751822286 + 0.1 * 1.3132616875182228),  # cDPO: + ε·(-log σ(-1))
        (0.1, 0.0, 0.5981388693815918),  # -log σ(0.2)
    ],
)
def test_dpo_loss_literal(beta, label_smoothing, expected):
    out = dpo_loss(t([-10.0]), t([-12.0]), t([-11.0]), t([-11.0]), beta, label_smoothing)
    assert out.losses.item() == pytest.approx(expected, abs=1e-6)
    assert out.chosen_rewards.item() == pytest.approx(beta)
    assert out.rejected_rewards.item() == pytest.approx(-beta)


def test_ipo_loss_literal_both_forms():
    args = (t([-10.0]), t([-12.0]), t([-11.0]), t([-11.0]), 0.5)  # 1/(2β) = 1
    # TRL's per-token form with 2 chosen / 4 rejected tokens: h = 1/2 + 1/4 = 0.75
    assert ipo_loss(*args, t([2.0]), t([4.0])).losses.item() == pytest.approx(0.0625)
    # the paper's form: h = 1 - (-1) = 2
    assert ipo_loss(*args).losses.item() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kl", "expected"),
    [
        (0.5, [1 - 1 / (1 + math.exp(-0.5)), 2 * (1 - 1 / (1 + math.exp(-1.5)))]),
        (-0.5, [1 - 1 / (1 + math.exp(-1.0)), 2 * (1 - 1 / (1 + math.exp(-1.0)))]),  # z0 clamped at 0
    ],
)
def test_kto_loss_literal(kl, expected):
    out = kto_loss(t([-5.0, -7.0]), t([-6.0, -6.0]), t([True, False]), t(kl), beta=1.0, undesirable_weight=2.0)
    assert out.losses.tolist() == pytest.approx(expected, abs=1e-6)
    assert out.rewards.tolist() == pytest.approx([1.0, -1.0])
    assert out.kl.item() == max(kl, 0.0)


def test_kto_reference_point_carries_no_gradient():
    policy_kl = t([-3.0, -4.0], requires_grad=True)
    kl = kl_estimate(policy_kl, t([-4.0, -4.0]))
    assert kl.item() == pytest.approx(0.5) and not kl.requires_grad
    logps = t([-5.0], requires_grad=True)
    kto_loss(logps, t([-6.0]), t([True]), kl, beta=1.0).losses.sum().backward()
    assert logps.grad is not None and policy_kl.grad is None


def test_simpo_loss_literal():
    # mean per-token log-probs -10/2 = -5 and -12/4 = -3: β·(−5 − (−3)) − γ = 2·(−2) − 1 = −5
    out = simpo_loss(t([-10.0]), t([-12.0]), t([2.0]), t([4.0]), beta=2.0, gamma=1.0)
    assert out.losses.item() == pytest.approx(math.log1p(math.exp(5.0)), abs=1e-6)
    assert (out.chosen_rewards.item(), out.rejected_rewards.item()) == (-10.0, -6.0)


def test_orpo_loss_literal():
    # mean log-probs ln(0.5) and ln(0.25): odds 1 and 1/3, log odds ratio ln 3
    chosen, rejected = 2 * math.log(0.5), 2 * math.log(0.25)
    out = orpo_loss(t([chosen]), t([rejected]), t([2.0]), t([2.0]), beta=0.5)
    nll = -math.log(0.5)  # per chosen token
    assert out.nll.item() == pytest.approx(nll)
    assert out.losses.item() == pytest.approx(nll + 0.5 * math.log1p(1 / 3), abs=1e-6)  # − λ·log σ(ln 3)


def test_losses_have_gradients_towards_the_preference():
    chosen = t([-10.0], requires_grad=True)
    rejected = t([-12.0], requires_grad=True)
    dpo_loss(chosen, rejected, t([-11.0]), t([-11.0]), 0.1).losses.sum().backward()
    assert chosen.grad.item() < 0 < rejected.grad.item()  # descent raises chosen, lowers rejected


# ---- an independent computation on a fixed batch and a fixed tiny model -------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    policy_dir = shared_tiny_model(tmp_path_factory)
    ref_dir = perturbed_copy(policy_dir, tmp_path_factory.getbasetemp() / "tiny-model-perturbed")
    load = lambda p: AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32).eval()  # noqa: E731
    return {
        "policy_dir": policy_dir,
        "ref_dir": ref_dir,
        "policy": load(policy_dir),
        "ref": load(ref_dir),
        "tokenizer": AutoTokenizer.from_pretrained(policy_dir),
    }


ROWS = [
    {"prompt": "How do I fix a bike?", "chosen": "Sure, here is how to fix a bike: first gather the tools.",
     "rejected": "I don't know about bikes."},
    {"prompt": "How do I bake a cake?", "chosen": "Sure, first read the instructions carefully.",
     "rejected": "I don't know about cakes. Maybe ask someone else. I really cannot say."},
    {"prompt": "How do I paint a fence?", "chosen": "Sure: start with the simplest part.",
     "rejected": "I don't know."},
]  # fmt: skip


def _by_hand(model, tokenizer, prompt: str, completion: str) -> float:
    """Sum of log p(token) over the completion + EOS, from the full logits of one unpadded row."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    ids = tokenizer(prompt + completion + tokenizer.eos_token)["input_ids"]
    assert ids[: len(prompt_ids)] == prompt_ids  # these prompts tokenise the same alone
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    logprobs = torch.log_softmax(logits.double(), -1)
    return sum(logprobs[pos - 1, ids[pos]].item() for pos in range(len(prompt_ids), len(ids)))


def _ours(model, tokenizer, rows, columns):
    encoded = encode_split(rows, tokenizer, False, columns, 1024)
    prompts = encoded.prompts * len(columns)
    completions = [c for column in columns for c in encoded.completions[column]]
    batch = collate(prompts, completions, tokenizer.pad_token_id, 1024)
    with torch.no_grad():
        logps = CompletionLogps(model)(batch.input_ids, batch.attention_mask, batch.completion_mask)
    return logps, batch.completion_mask.sum(-1)


def test_completion_logps_match_full_logits(models):
    logps, _ = _ours(models["policy"], models["tokenizer"], ROWS, ("chosen", "rejected"))
    expected = [
        _by_hand(models["policy"], models["tokenizer"], r["prompt"], r[c]) for c in ("chosen", "rejected") for r in ROWS
    ]
    assert logps.tolist() == pytest.approx(expected, abs=1e-4)


def test_pair_losses_match_the_formulas(models):
    tok, beta = models["tokenizer"], 0.1
    pol, tokens = _ours(models["policy"], tok, ROWS, ("chosen", "rejected"))
    ref, _ = _ours(models["ref"], tok, ROWS, ("chosen", "rejected"))
    n = len(ROWS)
    which = {
        "pc": ("policy", "chosen"),
        "pr": ("policy", "rejected"),
        "rc": ("ref", "chosen"),
        "rr": ("ref", "rejected"),
    }
    by_hand = {name: [_by_hand(models[m], tok, r["prompt"], r[c]) for r in ROWS] for name, (m, c) in which.items()}
    lens = {
        c: [
            len(tok(r["prompt"] + r[c] + tok.eos_token)["input_ids"]) - len(tok(r["prompt"])["input_ids"]) for r in ROWS
        ]
        for c in ("chosen", "rejected")
    }
    dpo_expected, ipo_expected = [], []
    for i in range(n):
        rho_w = by_hand["pc"][i] - by_hand["rc"][i]
        rho_l = by_hand["pr"][i] - by_hand["rr"][i]
        dpo_expected.append(math.log1p(math.exp(-beta * (rho_w - rho_l))))
        ipo_expected.append((rho_w / lens["chosen"][i] - rho_l / lens["rejected"][i] - 1 / (2 * beta)) ** 2)
    dpo = dpo_loss(pol[:n], pol[n:], ref[:n], ref[n:], beta)
    ipo = ipo_loss(pol[:n], pol[n:], ref[:n], ref[n:], beta, tokens[:n], tokens[n:])
    assert dpo.losses.tolist() == pytest.approx(dpo_expected, abs=1e-5)
    assert ipo.losses.tolist() == pytest.approx(ipo_expected, abs=1e-5)
    assert dpo.chosen_rewards.tolist() == pytest.approx(
        [beta * (a - b) for a, b in zip(by_hand["pc"], by_hand["rc"], strict=True)], abs=1e-5
    )


def test_kto_loss_and_kl_match_the_formulas(models):
    tok, beta = models["tokenizer"], 0.1
    rows = [
        {"prompt": r["prompt"], "completion": r[c], "label": c == "chosen"}
        for r in ROWS
        for c in ("chosen", "rejected")
    ]
    partners = kl_partners(batch_plan(len(rows), len(rows), seed=0, shuffle=False))
    assert partners == [5, 0, 1, 2, 3, 4]  # TRL's rotation: row 0 takes the last row's completion
    mismatched = [{**rows[i], "completion": rows[partners[i]]["completion"]} for i in range(len(rows))]
    pol, _ = _ours(models["policy"], tok, rows, ("completion",))
    ref, _ = _ours(models["ref"], tok, rows, ("completion",))
    pol_kl, _ = _ours(models["policy"], tok, mismatched, ("completion",))
    ref_kl, _ = _ours(models["ref"], tok, mismatched, ("completion",))
    kl_by_hand = sum(
        _by_hand(models["policy"], tok, r["prompt"], r["completion"])
        - _by_hand(models["ref"], tok, r["prompt"], r["completion"])
        for r in mismatched
    ) / len(rows)
    z0 = max(kl_by_hand, 0.0)
    expected = []
    for r in rows:
        rho = _by_hand(models["policy"], tok, r["prompt"], r["completion"]) - _by_hand(
            models["ref"], tok, r["prompt"], r["completion"]
        )
        sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
        expected.append(1 - sig(beta * (rho - z0)) if r["label"] else 1.33 * (1 - sig(beta * (z0 - rho))))
    out = kto_loss(pol, ref, t([r["label"] for r in rows]), kl_estimate(pol_kl, ref_kl), beta, 1.0, 1.33)
    assert kl_estimate(pol_kl, ref_kl).item() == pytest.approx(kl_by_hand, abs=1e-5)
    assert out.kl.item() == pytest.approx(z0, abs=1e-5)
    assert out.losses.tolist() == pytest.approx(expected, abs=1e-5)


# ---- TRL's own trainers: step-0 values with learning rate 0 --------------------------------
# (TRL's configs trip transformers' gradient_checkpointing deprecation warning; not ours.)
trl_warnings = pytest.mark.filterwarnings("ignore::FutureWarning")


def _trl_common(tmp_path):
    return dict(
        output_dir=str(tmp_path / "trl"), bf16=False, gradient_checkpointing=False, use_cpu=True, report_to=[],
        learning_rate=0.0, max_steps=1, per_device_train_batch_size=8, logging_steps=1, save_strategy="no",
        beta=0.1, max_length=1024, disable_tqdm=True,
    )  # fmt: skip


@trl_warnings
@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_dpo_and_ipo_match_trl_step_zero(models, tmp_path, loss_type):
    trl = pytest.importorskip("trl")
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM

    rows = load_from_disk(str(pair_export(tmp_path / "export", n_train=8, n_test=2)))["train"]
    load = lambda p: AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32)  # noqa: E731
    trainer = trl.DPOTrainer(
        model=load(models["policy_dir"]),
        ref_model=load(models["ref_dir"]),
        args=trl.DPOConfig(loss_type=[loss_type], **_trl_common(tmp_path)),
        train_dataset=rows,
        processing_class=models["tokenizer"],
    )
    trainer.train()
    logged = trainer.state.log_history[0]

    tok, n = models["tokenizer"], len(rows)
    pol, tokens = _ours(models["policy"], tok, list(rows), ("chosen", "rejected"))
    ref, _ = _ours(models["ref"], tok, list(rows), ("chosen", "rejected"))
    if loss_type == "sigmoid":
        ours = dpo_loss(pol[:n], pol[n:], ref[:n], ref[n:], 0.1)
    else:
        ours = ipo_loss(pol[:n], pol[n:], ref[:n], ref[n:], 0.1, tokens[:n], tokens[n:])
    assert ours.losses.mean().item() == pytest.approx(logged["loss"], abs=1e-5)
    assert ours.chosen_rewards.mean().item() == pytest.approx(logged["rewards/chosen"], abs=1e-5)
    assert ours.rejected_rewards.mean().item() == pytest.approx(logged["rewards/rejected"], abs=1e-5)
    assert pol[:n].mean().item() == pytest.approx(logged["logps/chosen"], rel=1e-6)


@trl_warnings
def test_kto_matches_trl_step_zero(models, tmp_path):
    trl = pytest.importorskip("trl")
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM

    rows = load_from_disk(str(kto_export(tmp_path / "export", n_train=4, n_test=2)))["train"]
    load = lambda p: AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32)  # noqa: E731
    trainer = trl.KTOTrainer(
        model=load(models["policy_dir"]),
        ref_model=load(models["ref_dir"]),
        args=trl.KTOConfig(**_trl_common(tmp_path)),
        train_dataset=rows,
        processing_class=models["tokenizer"],
    )
    trainer.train()
    logged = trainer.state.log_history[0]

    tok, rows = models["tokenizer"], list(rows)
    partners = kl_partners(batch_plan(len(rows), 8, seed=0, shuffle=False))  # TRL: sequential batches of 8
    mismatched = [{**rows[i], "completion": rows[partners[i]]["completion"]} for i in range(len(rows))]
    pol, _ = _ours(models["policy"], tok, rows, ("completion",))
    ref, _ = _ours(models["ref"], tok, rows, ("completion",))
    kl = kl_estimate(
        _ours(models["policy"], tok, mismatched, ("completion",))[0],
        _ours(models["ref"], tok, mismatched, ("completion",))[0],
    )
    labels = t([r["label"] for r in rows])
    ours = kto_loss(pol, ref, labels, kl, 0.1)
    assert ours.losses.mean().item() == pytest.approx(logged["loss"], abs=1e-5)
    assert ours.kl.item() == pytest.approx(logged["kl"], abs=1e-5)
    assert ours.rewards[labels].mean().item() == pytest.approx(logged["rewards/chosen"], abs=1e-5)
    assert ours.rewards[~labels].mean().item() == pytest.approx(logged["rewards/rejected"], abs=1e-5)


@pytest.mark.parametrize(
    ("kind", "ipo_form", "expected"),
    [
        ("dpo", "normalised", 0.31326168751822286),
        ("ipo", "normalised", 0.0625),
        ("ipo", "paper", 1.0),
        ("simpo", "normalised", math.log1p(math.exp(-0.5 * (-5 + 3) + 0.5))),  # γ = 0.5 (TRL's default)
    ],
)
def test_the_trainer_picks_the_configured_loss(kind, ipo_form, expected):
    from prefstream.train.objectives import pair_loss
    from prefstream.train.settings import TrainSettings

    settings = TrainSettings(kind=kind, data="d", model="m", out="o", beta=0.5, ipo_form=ipo_form)
    out = pair_loss(settings, t([-10.0]), t([-12.0]), t([-11.0]), t([-11.0]), t([2.0]), t([4.0]))
    assert out.losses.item() == pytest.approx(expected, abs=1e-6)


def _reference_free_step_zero(trainer_cls, args, models, tmp_path):
    """TRL's first logged step of a reference-free trainer, and our summed log-probs and
    completion token counts ([chosen; rejected]) for the same rows."""
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM

    rows = load_from_disk(str(pair_export(tmp_path / "export", n_train=8, n_test=2)))["train"]
    trainer = trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(models["policy_dir"], dtype=torch.float32),
        args=args,
        train_dataset=rows,
        processing_class=models["tokenizer"],
    )
    trainer.train()
    pol, tokens = _ours(models["policy"], models["tokenizer"], list(rows), ("chosen", "rejected"))
    return trainer.state.log_history[0], pol, tokens, len(rows)


@trl_warnings
def test_simpo_matches_trl_cpo_step_zero(models, tmp_path):
    pytest.importorskip("trl")
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    args = CPOConfig(loss_type="simpo", cpo_alpha=0.0, simpo_gamma=0.7, **{**_trl_common(tmp_path), "beta": 2.0})
    logged, pol, tokens, n = _reference_free_step_zero(CPOTrainer, args, models, tmp_path)
    ours = simpo_loss(pol[:n], pol[n:], tokens[:n], tokens[n:], beta=2.0, gamma=0.7)
    assert ours.losses.mean().item() == pytest.approx(logged["loss"], abs=1e-5)
    assert ours.chosen_rewards.mean().item() == pytest.approx(logged["rewards/chosen"], abs=1e-5)
    assert ours.rejected_rewards.mean().item() == pytest.approx(logged["rewards/rejected"], abs=1e-5)
    assert (pol[:n] / tokens[:n]).mean().item() == pytest.approx(logged["logps/chosen"], rel=1e-6)


@trl_warnings
def test_orpo_matches_trl_step_zero(models, tmp_path):
    pytest.importorskip("trl")
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    logged, pol, tokens, n = _reference_free_step_zero(ORPOTrainer, ORPOConfig(**_trl_common(tmp_path)), models, tmp_path)
    ours = orpo_loss(pol[:n], pol[n:], tokens[:n], tokens[n:], beta=0.1)
    # The odds-ratio term and the diagnostics match TRL; the NLL term differs by design: TRL's
    # covers prompt and completion, ours (the paper's) the chosen completion only.
    assert (ours.losses.mean() - ours.nll).item() == pytest.approx(logged["loss"] - logged["nll_loss"], abs=1e-5)
    assert ours.chosen_rewards.mean().item() == pytest.approx(logged["rewards/chosen"], abs=1e-5)
    assert ours.rejected_rewards.mean().item() == pytest.approx(logged["rewards/rejected"], abs=1e-5)
    assert (pol[:n] / tokens[:n]).mean().item() == pytest.approx(logged["logps/chosen"], rel=1e-6)
    assert ours.nll.item() == pytest.approx(-(pol[:n].sum() / tokens[:n].sum()).item())
