"""Every training method on a tiny BERT: attach, train, save (safetensors only), digest, reload identically, and
the whole flow through registration, approval and verified loading."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.builders import people_now
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tasks.governance import loader
from tasks.training import methods
from tasks.training.adapter_files import read_metadata, recompute_digest, save_adapter
from tasks.core.config import ModelConfig, TrainingConfig
from tasks.core.peft_config import METHOD_OPTIONS, PeftConfig
from tasks.core.errors import EXIT_BAD_INPUT, InputError
from tasks.training.model import count_parameters, load_classifier, load_tokenizer, resolve_base_model, wrap_with_peft
from tasks.core.names import ADAPTER_MANIFEST, ADAPTER_METADATA, Tag
from tasks.training.loop import encode, predict_logits, train

TASK = "sequence_classification"
HIDDEN, LAYERS = 32, 2  # the tiny_bert fixture
CASES = {  # id -> PeftConfig options; small sizes keep it fast
    "lora": dict(method="lora", r=2),  # the default targets: every linear layer but the head
    "lora+dora": dict(method="lora", r=2, use_dora=True, target_modules=["query", "value"]),
    "lora+rslora": dict(method="lora", r=2, use_rslora=True, target_modules=["query", "value"]),
    "ia3": dict(method="ia3", target_modules=["key", "value", "output.dense"], feedforward_modules=["output.dense"]),
    "prompt_tuning": dict(method="prompt_tuning", num_virtual_tokens=4),
    "prefix_tuning": dict(method="prefix_tuning", num_virtual_tokens=4),
    "loha": dict(method="loha", r=2, target_modules=["query", "value"]),
    "lokr": dict(method="lokr", r=2, target_modules=["query", "value"]),
    "vera": dict(method="vera", r=4, target_modules=["query", "value"]),
    "bottleneck:pfeiffer": dict(method="bottleneck", bottleneck="pfeiffer", reduction_factor=8),
    "bottleneck:houlsby": dict(method="bottleneck", bottleneck="houlsby", reduction_factor=8),
    "full": dict(method="full"),
}
PEFT_FILES = {"adapter_config.json", "adapter_model.safetensors", ADAPTER_METADATA, ADAPTER_MANIFEST}
OWN_FILES = {"adapter_model.safetensors", "adapter_structure.json", ADAPTER_METADATA, ADAPTER_MANIFEST}


@pytest.fixture(scope="module")
def setup(tiny_bert, tickets):
    base = resolve_base_model(ModelConfig(base=str(tiny_bert)))
    labels = sorted(tickets["team"].unique())
    rows = tickets.head(48)
    tok = load_tokenizer(base, ModelConfig(base=base.path))
    enc = encode(tok, list(rows["text"]), [labels.index(t) for t in rows["team"]], 32)
    return {"base": base, "labels": labels, "tok": tok, "enc": enc}


def _base_model(setup):
    return load_classifier(setup["base"], ModelConfig(base=setup["base"].path), setup["labels"])


def _head_params(n_labels: int) -> int:
    return HIDDEN * n_labels + n_labels


def test_every_configurable_method_has_a_case():
    assert set(methods.METHODS) == {PeftConfig(**o).method for o in CASES.values()}
    assert {methods.method_label(PeftConfig(**o)) for o in CASES.values()} == set(CASES)


@pytest.mark.parametrize("case", list(CASES))
def test_method_trains_saves_only_what_it_trained_and_reloads_identically(setup, tmp_path, case):
    cfg = PeftConfig(**CASES[case])
    torch.manual_seed(0)
    base_model, fresh = _base_model(setup)
    assert fresh, "the tiny classifier's head is freshly initialised"
    model = wrap_with_peft(base_model, cfg, TASK, fresh)
    trainable, total = count_parameters(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    enc, pad = setup["enc"], setup["tok"].pad_token_id
    train(model, enc, enc, pad, TrainingConfig(epochs=1, max_steps=3, batch_size=16, learning_rate=1e-2, seed=1))
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    trainable_names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable_names, "only trainable weights may change"
    assert any("classifier" in n for n in changed), "the fresh head is trained"
    if cfg.method == "full":
        assert trainable == total
    else:
        assert 0 < trainable < total * 0.5

    out = tmp_path / "adapter"
    digest = save_adapter(model, out, {"task": TASK, "labels": setup["labels"]}, cfg)
    files = {p.name for p in out.iterdir()}
    assert files == (PEFT_FILES if cfg.method in methods.PEFT_METHODS else OWN_FILES)
    manifest = json.loads((out / ADAPTER_MANIFEST).read_text())
    assert manifest["digest"] == digest == recompute_digest(out)
    assert set(manifest["files"]) == files - {ADAPTER_MANIFEST}
    assert read_metadata(out)["peft"]["method"] == cfg.method
    with safe_open(str(out / methods.WEIGHTS_FILE), framework="pt") as f:
        stored = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())
    if cfg.method == "vera":
        assert stored > trainable  # VeRA also stores its frozen shared random projections
    else:
        assert stored == trainable, "the file holds exactly the trained tensors"

    model.eval()
    fresh_base, _ = _base_model(setup)  # another random head: everything trained must come from the files
    reloaded = methods.load_weights(fresh_base, out, read_metadata(out))
    np.testing.assert_allclose(predict_logits(model, enc, pad, 16), predict_logits(reloaded, enc, pad, 16),
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("case, expected", [
    ("lora", LAYERS * 2 * (2 * HIDDEN * 2)),  # A (r x h) + B (h x r) on query and value
    ("prompt_tuning", 4 * HIDDEN),
    ("prefix_tuning", 4 * LAYERS * 2 * HIDDEN),  # a key and a value per layer and virtual token
    ("bottleneck:pfeiffer", LAYERS * ((HIDDEN * 4 + 4) + (4 * HIDDEN + HIDDEN))),  # down + up, bottleneck 32/8
])
def test_trainable_parameter_count_is_the_method_plus_the_head(setup, case, expected):
    model, fresh = _base_model(setup)
    options = {**CASES[case], "target_modules": ["query", "value"]} if case == "lora" else CASES[case]
    model = wrap_with_peft(model, PeftConfig(**options), TASK, fresh)
    assert count_parameters(model)[0] == expected + _head_params(len(setup["labels"]))


def test_full_fine_tuning_counts_every_weight_once(setup):
    model, fresh = _base_model(setup)
    plain = sum(p.numel() for p in model.parameters())
    model = wrap_with_peft(model, PeftConfig(method="full"), TASK, fresh)
    assert count_parameters(model) == (plain, plain)


@pytest.mark.parametrize("case", ["lora", "bottleneck:pfeiffer", "full"])
def test_weights_that_do_not_fit_the_rebuilt_model_are_refused(setup, tmp_path, case):
    cfg = PeftConfig(**CASES[case])
    model, fresh = _base_model(setup)
    out = tmp_path / "adapter"
    save_adapter(wrap_with_peft(model, cfg, TASK, fresh), out, {"task": TASK}, cfg)
    weights = out / methods.WEIGHTS_FILE
    tensors = load_file(str(weights))
    dropped = sorted(tensors)[0]
    save_file({k: v for k, v in tensors.items() if k != dropped}, str(weights))
    with pytest.raises(InputError, match="does not fit the rebuilt model: missing"):
        methods.load_weights(_base_model(setup)[0], out, read_metadata(out))


def test_metadata_naming_another_method_is_refused(setup, tmp_path):
    cfg = PeftConfig(**CASES["bottleneck:pfeiffer"])
    model, fresh = _base_model(setup)
    out = tmp_path / "adapter"
    save_adapter(wrap_with_peft(model, cfg, TASK, fresh), out, {"task": TASK}, cfg)
    with pytest.raises(InputError, match="metadata says method 'lora'"):
        methods.load_weights(_base_model(setup)[0], out, {"task": TASK, "peft": {"method": "lora"}})


@pytest.mark.parametrize("options, fragment", [
    (dict(method="ia3", use_dora=True), "peft.use_dora applies to method lora only, not ia3"),
    (dict(method="lora", num_virtual_tokens=5), "peft.num_virtual_tokens applies to method prompt_tuning or "
                                                "prefix_tuning only"),
    (dict(method="lora", bottleneck="houlsby"), "peft.bottleneck applies to method bottleneck only"),
    (dict(method="prompt_tuning", num_virtual_tokens=0), "peft.num_virtual_tokens must be a positive integer"),
    (dict(method="bottleneck", reduction_factor=0), "peft.reduction_factor must be a positive integer"),
    (dict(method="ia3", feedforward_modules=["output.dense"]), "must also be in peft.target_modules"),
])
def test_bad_method_options_are_refused_with_the_fix(options, fragment):
    with pytest.raises(ValueError, match="peft") as err:
        PeftConfig(**options)
    assert fragment in str(err.value)


def test_a_bad_method_option_exits_2_before_anything_runs(home, cli, tickets_csv, tiny_bert, capsys):
    code = cli(["run", "--set", f"data.path={tickets_csv}", "--set", f"model.base={tiny_bert}",
                "--set", "peft.method=ia3", "--set", "peft.use_rslora=true"])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT, err
    assert "peft.use_rslora applies to method lora only" in err
    code = cli(["run", "--set", f"data.path={tickets_csv}", "--set", "peft.method=adalora"])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT and "peft.method" in err and "bottleneck" in err


# --- the whole flow, per method ----------------------------------------------------------------------------

FLOW = ["training.epochs=1", "training.max_steps=2", "training.batch_size=16", "training.learning_rate=0.01",
        "gates.bias.bootstrap_samples=0", "gates.bias.judge_on=point", "gates.bias.min_group_size=10",
        "gates.regression.min_group_size=10", "gates.regression.min_margin_over_baseline=-1.0",
        "gates.regression.baselines=[majority]", "gates.bias.max_accuracy_gap=1.0",
        "gates.bias.max_equalized_odds_difference=1.0", "gates.bias.min_disparate_impact_ratio=0.0",
        "gates.bias.max_counterfactual_flip_rate=1.0", "gates.bias.max_counterfactual_prob_change=1.0"]


def _flow_sets(options: dict) -> list[str]:
    """``--set`` overrides for one case on top of configs/tiny.yaml, whose LoRA rank and alpha go back to their
    defaults for a method that does not read them (it would be refused, not silently ignored)."""
    reads = METHOD_OPTIONS[options["method"]]
    unread = {o: PeftConfig.model_fields[o].default for o in ("r", "alpha") if o not in reads}
    return [f"peft.{k}={json.dumps(v) if isinstance(v, list) else str(v).lower() if isinstance(v, bool) else v}"
            for k, v in {**unread, **options}.items()]


#: One whole flow per way an adapter is saved and loaded: peft's LoRA family (lora; dora changes its weights' layout),
#: (IA)3, the two prompt-based methods, the `adapters` library's bottleneck, and full fine-tuning. rslora, houlsby,
#: loha, lokr and vera load as their family does; each of them is saved and reloaded bit for bit by
#: test_method_trains_saves_only_what_it_trained_and_reloads_identically above (a flow each costs CI ~12 s).
FLOW_CASES = ["lora", "lora+dora", "ia3", "prompt_tuning", "prefix_tuning", "bottleneck:pfeiffer", "full"]


@pytest.mark.integration
@pytest.mark.parametrize("case", FLOW_CASES)
def test_flow_registers_every_method_and_the_approved_version_verifies_and_predicts(
        prefect_harness, home, cli, tickets_csv, tiny_bert, tickets, capsys, monkeypatch, case):
    from pathlib import Path

    from tasks.governance import approvals
    from tasks.governance import registry

    config = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
    sets = [f"data.path={tickets_csv}", f"model.base={tiny_bert}", "model.max_length=32", *FLOW,
            *_flow_sets(CASES[case])]
    code = cli(["run", "--config", str(config), *[a for s in sets for a in ("--set", s)]])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    name = "support-ticket-router"
    mv = registry.client().get_model_version(name, "1")
    assert mv.tags[Tag.PEFT_METHOD] == case
    assert int(mv.tags[Tag.PEFT_TRAINABLE_PARAMS]) > 0
    approvals.approve(name, "1", people_now()["reviewer"], f"{case} adapter reviewed")
    report = loader.verify(f"{name}@champion")
    assert report.ok, report.to_text()
    texts = list(tickets["text"].head(5))
    preds = loader.predict(f"{name}@champion", texts)
    assert len(preds) == 5 and all(p["label"] in set(tickets["team"]) for p in preds)
