"""training.search: the choices a method reads, seeded and reproducible trials, repeated settings not retrained, and
a whole flow run on the tiny model whose registered adapter is the best trial's, with its settings in the lineage."""

import json

import pytest

from tasks.core.config import Config
from tasks.core.errors import InputError
from tasks.core.config_files import load_config
from tasks.training.search import apply, search, space


def _config(**training) -> Config:
    return Config(data={"path": "x.csv"}, peft={"r": 8, "alpha": 16},
                  training={"search": {"trials": 6, **training}})


def test_the_space_is_what_the_method_reads():
    assert set(space(_config())) == {"learning_rate", "r", "target_modules"}
    ia3 = _config().model_copy(update={"peft": Config(data={"path": "x"}, peft={"method": "ia3"}).peft})
    assert set(space(ia3)) == {"learning_rate", "target_modules"}
    prompt = _config().model_copy(update={"peft": Config(data={"path": "x"}, peft={"method": "prompt_tuning"}).peft})
    assert set(space(prompt)) == {"learning_rate"}


def test_a_trial_config_takes_its_settings_and_searches_nothing():
    cfg = apply(_config(), {"learning_rate": 1e-3, "r": 4, "target_modules": "query, value"})
    assert cfg.training.learning_rate == 1e-3 and cfg.peft.r == 4 and cfg.peft.alpha == 8  # alpha/r kept at 2
    assert cfg.peft.target_modules == ["query", "value"] and cfg.training.search.trials == 0


def test_the_search_is_seeded_picks_the_best_and_never_trains_the_same_settings_twice():
    trained: list[dict] = []

    def train_batch(batch):
        out = []
        for number, cfg in batch:
            trained.append({"lr": cfg.training.learning_rate, "r": cfg.peft.r, "t": tuple(cfg.peft.target_modules)})
            out.append((cfg.training.learning_rate * 100 + cfg.peft.r / 100, f"run-{number}"))
        return out

    cfg = _config(trials=12, learning_rate=[1e-3, 2e-3], r=[4, 8], target_modules=["query,value"])
    first = search(cfg, train_batch)
    assert len(first.trials) == 12 and len(trained) <= 4  # only 4 distinct settings exist
    assert len({tuple(sorted(t.items())) for t in trained}) == len(trained)
    assert first.best.params == {"learning_rate": 2e-3, "r": 8, "target_modules": "query,value"}
    assert all(t.repeated == (t.run_id != f"run-{t.number}") for t in first.trials)
    again = search(cfg, train_batch)
    assert [t.params for t in again.trials] == [t.params for t in first.trials]  # same seed, same trials
    other = search(cfg.model_copy(update={"training": cfg.training.model_copy(update={
        "search": cfg.training.search.model_copy(update={"seed": 99})})}), train_batch)
    assert [t.params for t in other.trials] != [t.params for t in first.trials]


def test_search_is_refused_where_it_does_not_apply(tmp_path):
    with pytest.raises(InputError, match="training.search applies to model.task sequence_classification"):
        load_config("configs/causal_tiny.yaml", ["training.search.trials=2"])
    with pytest.raises(InputError, match="set training.processes: 1"):
        load_config("configs/default.yaml", ["training.search.trials=2", "training.processes=2"])
    with pytest.raises(InputError, match="give at least one choice"):
        load_config("configs/default.yaml", ["training.search.r=[]"])


@pytest.mark.integration
def test_a_run_with_search_registers_the_best_trials_adapter_with_its_settings(prefect_harness, home, tickets_csv,
                                                                             tiny_bert, cli, capsys):
    from mlflow.tracking import MlflowClient

    from tasks.core import state
    from tasks.core.names import Tag

    sets = [f"data.path={tickets_csv}", f"model.base={tiny_bert}", "training.epochs=1", "training.max_steps=4",
            "training.search.trials=3", "training.search.learning_rate=[0.001,0.01]", "training.search.r=[2,4]",
            "gates.bias.bootstrap_samples=0", "gates.bias.judge_on=point",
            "gates.regression.min_margin_over_baseline=-1.0"]
    code = cli(["run", "--config", "configs/tiny.yaml", "--json"] + [a for s in sets for a in ("--set", s)])
    captured = capsys.readouterr()
    out = captured.out
    assert code in (0, 3), captured.err
    summary = json.loads(out[out.index("{"):])
    c = MlflowClient(state.tracking_uri(), registry_uri=state.tracking_uri())
    exp = c.get_experiment_by_name("adaptrail").experiment_id
    trials = c.search_runs([exp], f"tags.mlflow.parentRunId = '{summary['run_id']}'")
    assert 1 <= len(trials) <= 3 and all(r.data.tags[Tag.REQUESTED_BY] for r in trials)
    params = c.get_run(summary["run_id"]).data.params
    report = json.loads(open(c.download_artifacts(summary["run_id"], "reports/search.json")).read())
    best = report["best"]
    assert best["value"] == max(t["value"] for t in report["trials"]) and len(report["trials"]) == 3
    assert float(params["search.best.learning_rate"]) == best["params"]["learning_rate"]
    assert params["search.best.run_id"] == best["run_id"]
    (version,) = c.search_model_versions("name='support-ticket-router'")
    assert version.tags[Tag.ADAPTER_DIGEST] == summary["adapter_digest"]
    meta = json.loads(open(c.download_artifacts(summary["run_id"], "adapter/adaptrail.json")).read())
    assert meta["training"]["learning_rate"] == best["params"]["learning_rate"]  # in the digest-covered lineage
    assert meta["peft"]["r"] == best["params"]["r"] and meta["training"]["search"]["trials"] == 0
