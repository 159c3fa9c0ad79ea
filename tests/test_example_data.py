"""The example support-ticket data: deterministic bytes, the committed file current, clean for the validation gate."""

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tasks.data.splits import normalize_text
from tasks.core.errors import InputError
from tests.builders import skew_group_labels
from tasks.data.example import (GROUPS, LABELS, generate_support_tickets, main,
                                write_support_tickets)
from tasks.gates.identity_terms import GENDER, NAMES
from validation.pii import FINDERS

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "examples" / "support_tickets.csv"


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def default() -> pd.DataFrame:
    return generate_support_tickets()


def test_same_seed_gives_identical_bytes_and_the_committed_file_is_current(tmp_path):
    a = write_support_tickets(tmp_path / "a.csv")
    b = write_support_tickets(tmp_path / "nested" / "b.csv")
    assert sha256(a) == sha256(b)
    assert COMMITTED.is_file(), "examples/support_tickets.csv is missing: run `python -m tasks.data.example`"
    assert sha256(COMMITTED) == sha256(a), "the committed example data is stale: run `python -m tasks.data.example`"


def test_module_entry_point_gives_the_same_bytes_under_another_hash_seed(tmp_path):
    """``python -m tasks.data.example`` in a fresh interpreter (other string hashing) writes what this one does."""
    out = tmp_path / "t.csv"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run([sys.executable, "-m", "tasks.data.example", "--out", str(out), "--rows", "120",
                           "--seed", "3"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert str(out) in done.stdout
    assert sha256(out) == sha256(write_support_tickets(tmp_path / "here.csv", n_rows=120, seed=3))
    frame = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(frame.columns) == ["ticket_id", "text", "team", "region"] and len(frame) == 120
    assert frame.equals(generate_support_tickets(120, seed=3))


def test_main_reports_bad_rows_as_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "x.csv"), "--rows", "3"])
    assert exc.value.code == 2 and "n_rows must be" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_different_seed_gives_different_data():
    a, b = generate_support_tickets(300, seed=1), generate_support_tickets(300, seed=2)
    assert len(set(a["text"]) & set(b["text"])) < 30
    assert not a["team"].equals(b["team"])


def test_default_data_has_the_declared_labels_groups_and_shares(default):
    assert len(default) == 3000 and default["ticket_id"].is_unique
    assert sorted(default["team"].unique()) == sorted(LABELS)
    assert default["team"].value_counts().min() >= 100
    shares = default["region"].value_counts(normalize=True)
    assert list(shares.index) == GROUPS  # 40/30/20/10: unequal group sizes, largest first
    assert shares.round(2).tolist() == [0.4, 0.3, 0.2, 0.1]


def test_no_duplicates_after_normalisation_and_lengths_in_range(default):
    assert default["text"].map(normalize_text).is_unique
    words = default["text"].str.split().str.len()
    assert words.between(8, 60).all() and default["text"].str.len().between(2, 2000).all()
    assert 18 <= words.mean() <= 35


def test_no_email_phone_card_or_long_digit_runs(default):
    texts = list(default["text"])
    for kind, find in FINDERS.items():
        assert [t for t in texts if find(t)] == [], f"{kind} found"
    assert not [t for t in texts if "@" in t or re.search(r"\d{7,}", t)]
    chains = [m.group() for t in texts for m in re.finditer(r"\d(?:[\s().,/+-]{0,2}\d)*", t)]
    assert max(sum(c.isdigit() for c in chain) for chain in chains) < 7


def test_regions_differ_in_spelling_and_currency(default):
    by_region = default.groupby("region")["text"].apply(" ".join)
    assert "color" in by_region["en-US"] and "color" not in by_region["en-GB"]
    assert "zip code" in by_region["en-US"] and "postcode" in by_region["en-GB"]
    assert "£" in by_region["en-GB"] and "£" not in by_region["en-US"]
    assert "₹" in by_region["en-IN"] or "Rs." in by_region["en-IN"]


def test_some_tickets_mention_people_by_gendered_terms_and_names(default):
    gender = {w for pair in GENDER for w in pair}
    names = {w for pair in NAMES for w in pair}
    tokens = default["text"].map(lambda t: set(re.findall(r"[\w']+", t)))
    with_gender = tokens.map(lambda ws: bool({w.lower() for w in ws} & gender))
    with_name = tokens.map(lambda ws: bool(ws & names))
    assert with_gender.mean() > 0.1 and with_name.mean() > 0.05
    assert all(with_gender[default["team"] == team].sum() >= 30 for team in LABELS)  # swaps reach every team


def test_every_team_has_its_own_vocabulary(default):
    """Learnable: a word that names the request is mostly seen with one team (not a noise-only data set)."""
    for team, word in [("billing", "charged"), ("technical", "crashes"), ("account", "password"),
                       ("shipping", "delivered"), ("returns", "exchange")]:
        rows = default[default["text"].str.contains(rf"\b{word}\b", case=False)]
        assert (rows["team"] == team).mean() > 0.5, (team, word)


def test_skew_group_labels_changes_exactly_the_expected_rows(default):
    skewed = skew_group_labels(default, "en-IN", "billing", 0.5, seed=4)
    changed = skewed["team"] != default["team"]
    eligible = (default["region"] == "en-IN") & (default["team"] != "billing")
    assert changed.sum() == round(0.5 * eligible.sum())
    assert not (changed & ~eligible).any() and (skewed.loc[changed, "team"] == "billing").all()
    assert skewed.drop(columns="team").equals(default.drop(columns="team"))
    assert default["team"].equals(generate_support_tickets()["team"])  # the input is left untouched
    assert skew_group_labels(default, "en-IN", "billing", 0.5, seed=4).equals(skewed)
    assert not skew_group_labels(default, "en-IN", "billing", 0.5, seed=5).equals(skewed)
    everything = skew_group_labels(default, "en-AU", "returns", 1.0)
    assert (everything.loc[default["region"] == "en-AU", "team"] == "returns").all()
    assert skew_group_labels(default, "en-AU", "returns", 0.0).equals(default)


@pytest.mark.parametrize("kwargs, message", [
    ({"group": "fr-FR"}, "group 'fr-FR' has no rows"),
    ({"fraction": 1.5}, "fraction must be between 0 and 1"),
    ({"to_label": ""}, "to_label must be a non-empty"),
    ({"label_column": "label"}, "column 'label' is not in the data"),
])
def test_skew_group_labels_rejects_bad_arguments(default, kwargs, message):
    args = {"group": "en-US", "to_label": "billing", "fraction": 0.5, **kwargs}
    with pytest.raises(InputError, match=re.escape(message)):
        skew_group_labels(default, **args)


@pytest.mark.parametrize("rows", [0, 5, 10**7])
def test_bad_row_counts_are_input_errors(rows):
    with pytest.raises(InputError, match="n_rows must be an integer"):
        generate_support_tickets(rows)
