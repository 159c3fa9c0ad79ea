"""Config: YAML + --set overrides, validation errors that name the field and the fix; shipped configs load."""

from pathlib import Path

import pytest

from tasks.core.config import Config
from tasks.core.config_files import load_config
from tasks.core.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_shipped_config_loads(name):
    cfg = load_config(ROOT / "configs" / name)
    assert isinstance(cfg, Config)
    assert Path(cfg.data.path).is_absolute()  # relative paths resolve against the config file


def test_overrides_are_typed_and_nested(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("data: {path: d.csv}\n")
    cfg = load_config(f, ["training.epochs=1", "peft.r=4", "data.labels=[a, b]", "data.deduplicate=true"])
    assert cfg.training.epochs == 1 and cfg.peft.r == 4 and cfg.data.labels == ["a", "b"] and cfg.data.deduplicate
    assert cfg.data.path == str((tmp_path / "d.csv").resolve())


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("peft.r=0", "peft.r must be a positive integer"),
        ("peft.r=-3", "peft.r must be a positive integer"),
        ("training.learning_rate=0", "training.learning_rate"),
        ("training.epochs=0", "training.epochs"),
        ("peft.dropout=1.5", "peft.dropout"),
        ("training.epocs=3", "training.epocs: unknown key"),
        ("data.labels=[a]", "at least two distinct"),
    ],
)
def test_invalid_values_name_the_field(tmp_path, override, fragment):
    f = tmp_path / "c.yaml"
    f.write_text("data: {path: d.csv}\n")
    with pytest.raises(InputError, match="invalid config") as err:
        load_config(f, [override])
    assert fragment in str(err.value)


def test_missing_config_file_and_bad_yaml(tmp_path):
    with pytest.raises(InputError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(InputError, match="key=value"):
        load_config(None, ["training.epochs"])


def test_data_path_is_required():
    with pytest.raises(InputError, match="data: is required"):
        load_config(None, [])


@pytest.mark.parametrize("method", ["lora", "ia3", "prompt_tuning", "prefix_tuning", "loha", "lokr", "vera",
                                    "bottleneck", "full"])
def test_every_method_is_a_valid_choice(tmp_path, method):
    f = tmp_path / "c.yaml"
    f.write_text("data: {path: d.csv}\n")
    assert load_config(f, [f"peft.method={method}"]).peft.method == method


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["peft.method=ia3", "peft.use_dora=true"], "peft.use_dora applies to method lora only, not ia3; remove it"),
        (["peft.method=full", "peft.use_rslora=true"], "peft.use_rslora applies to method lora only"),
        (["peft.method=lora", "peft.reduction_factor=8"], "peft.reduction_factor applies to method bottleneck only"),
        (["peft.method=bottleneck", "peft.bottleneck=adapterdrop"], "peft.bottleneck: Input should be 'pfeiffer'"),
        (["peft.method=prefix_tuning", "peft.num_virtual_tokens=-1"], "peft.num_virtual_tokens must be a positive"),
        (["peft.method=adalora"], "peft.method: Input should be 'lora', 'ia3'"),
        (["peft.method=ia3", "peft.feedforward_modules=[output.dense]"], "must also be in peft.target_modules"),
        # options several methods share are refused too where the chosen method would silently ignore them
        (["peft.method=ia3", "peft.r=16"], "peft.r applies to method lora or loha or lokr or vera only, not ia3"),
        (["peft.method=prompt_tuning", "peft.target_modules=[query]"], "peft.target_modules applies to method lora"),
        (["peft.method=full", "peft.dropout=0.2"], "peft.dropout applies to method lora or loha or lokr or vera"),
    ],
)
def test_method_options_are_checked_against_the_method(tmp_path, overrides, fragment):
    f = tmp_path / "c.yaml"
    f.write_text("data: {path: d.csv}\n")
    with pytest.raises(InputError, match="invalid config") as err:
        load_config(f, overrides)
    assert fragment in str(err.value)


def test_the_shipped_default_config_switches_method_without_a_refusal():
    """configs/default.yaml sets shared options only to their defaults, so ``--set peft.method=X`` just works."""
    for method in ("ia3", "prompt_tuning", "bottleneck", "full"):
        assert load_config("configs/default.yaml", [f"peft.method={method}"]).peft.method == method


def test_an_unknown_key_suggests_the_nearest_one():
    with pytest.raises(InputError, match=r"training.epoch: unknown key, did you mean training.epochs\?"):
        load_config("configs/default.yaml", ["training.epoch=2"])
    with pytest.raises(InputError) as err:
        load_config("configs/default.yaml", ["training.zzz=2"])
    assert "did you mean" not in str(err.value) and "config schema" in str(err.value)


def test_config_show_and_schema_print_what_a_run_would_use(cli, capsys):
    import json

    import yaml

    assert cli(["config", "show", "--set", "training.epochs=1"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["training"]["epochs"] == 1 and shown["peft"]["method"] == "lora"
    assert cli(["config", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "description" in schema["$defs"]["TrainingConfig"]["properties"]["progress_seconds"]


def test_a_dry_run_validates_the_data_and_trains_nothing(cli, capsys, state_home, tmp_path):
    assert cli(["run", "--config", "configs/tiny.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "# effective config" in out and "# validation gate: passed" in out and "nothing trained" in out
    assert not (state_home / "mlflow.db").exists()  # no run, no registry written
    bad = tmp_path / "dupes.csv"
    bad.write_text("text,team,region\n" + "same text,billing,eu\n" * 40, encoding="utf-8")
    assert cli(["run", "--config", "configs/tiny.yaml", "--dry-run", "--set", f"data.path={bad}",
                "--set", "data.deduplicate=false"]) == 2
    assert "data validation failed" in capsys.readouterr().err


def test_a_command_that_reads_versions_refuses_a_missing_state_directory(cli, capsys, state_home):
    assert cli(["verify", "support-ticket-router@champion"]) == 2
    assert f"no adaptrail state at {state_home}" in capsys.readouterr().err
    assert not (state_home / "mlflow.db").exists()  # nothing created in its place


def test_serve_refuses_a_temporary_api_no_ui_can_reach(cli, capsys, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert cli(["serve"]) == 2
    assert "PREFECT_API_URL is not set" in capsys.readouterr().err


def test_missing_columns_are_refused_from_the_header_before_any_server_starts(tmp_path):
    """A CSV without the label column: one line naming the columns, no Prefect server started for it (a child
    process, so nothing this test session imported counts)."""
    import subprocess
    import sys

    data = tmp_path / "no_label.csv"
    data.write_text("text,region\nmy invoice is wrong,eu\n", encoding="utf-8")
    env = {k: v for k, v in __import__("os").environ.items() if k != "PREFECT_API_URL"}
    env["ADAPTRAIL_HOME"] = str(tmp_path / "state")
    probe = ("import sys, flows.cli as c; code = c.main(['run', '--config', 'configs/tiny.yaml', '--set', "
             f"'data.path={data}']); print('flows.train_adapter' in sys.modules or 'torch' in sys.modules); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "adaptrail: error: column(s) ['team'] not in the data (columns are ['text', 'region']); set data.text_column "
        "/ data.label_column / data.group_column / data.split_column to match"]
    assert done.stdout.strip() == "False"  # the flow (so its Prefect server) and the training stack never loaded


def test_help_and_version_do_not_import_the_heavy_stack():
    """`adaptrail --help` builds the parser only: no MLflow, torch or Prefect import (it took seconds when it did)."""
    import subprocess
    import sys

    probe = ("import sys, flows.cli as c; c.build_parser(); "
             "print(sorted(m for m in ('mlflow', 'torch', 'prefect', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_verbose_shows_the_traceback_of_an_expected_error(cli, capsys, state_home):
    assert cli(["verify", "support-ticket-router@champion"]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert cli(["verify", "support-ticket-router@champion", "-v"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.rstrip().endswith("to your state")
