"""Data: loading formats, canonical columns, deterministic stratified split, content digest, dedup, bad input."""

import json

import pandas as pd
import pytest

from tasks.core.config import DataConfig
from tasks.data.splits import content_digest, load_dataset_splits, normalize_text, stratified_split
from tasks.core.errors import InputError


def _frame(n=200):
    return pd.DataFrame({"body": [f"message number {i} about {'cats' if i % 3 else 'dogs'}" for i in range(n)],
                         "y": ["a" if i % 3 else "b" for i in range(n)], "g": ["x" if i % 2 else "y" for i in range(n)]})


def _cfg(path, **kw):
    return DataConfig(path=str(path), text_column="body", label_column="y", **kw)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "hf_disk"])
def test_every_format_loads_to_the_same_digest(tmp_path, fmt):
    df = _frame()
    csv = tmp_path / "d.csv"
    df.to_csv(csv, index=False)
    reference = load_dataset_splits(_cfg(csv, group_column="g"))
    path = tmp_path / f"d.{fmt}"
    if fmt == "jsonl":
        df.to_json(path, orient="records", lines=True)
    elif fmt == "parquet":
        df.to_parquet(path)
    elif fmt == "hf_disk":
        import datasets

        datasets.Dataset.from_pandas(df).save_to_disk(str(path))
    else:
        path = csv
    got = load_dataset_splits(_cfg(path, group_column="g"))
    assert got.digest == reference.digest
    assert list(got.train.columns) == ["text", "label", "group"]


def test_split_is_deterministic_stratified_and_disjoint(tmp_path):
    csv = tmp_path / "d.csv"
    _frame(300).to_csv(csv, index=False)
    a, b = load_dataset_splits(_cfg(csv)), load_dataset_splits(_cfg(csv))
    assert a.digest == b.digest and a.train.equals(b.train)
    sizes = {k: len(v) for k, v in a.frames().items()}
    assert sum(sizes.values()) == 300 and sizes["test"] == 45 and sizes["validation"] == 45
    for frame in a.frames().values():  # class balance kept in every split (1/3 are "b")
        assert abs((frame["label"] == "b").mean() - 1 / 3) < 0.02
    texts = [set(f["text"]) for f in a.frames().values()]
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])
    assert load_dataset_splits(_cfg(csv, seed=99)).digest != a.digest


def test_digest_changes_with_any_row_and_not_without(tmp_path):
    df = _frame()
    csv = tmp_path / "d.csv"
    df.to_csv(csv, index=False)
    base = load_dataset_splits(_cfg(csv)).digest
    df.to_csv(csv, index=False)  # rewritten, same content
    assert load_dataset_splits(_cfg(csv)).digest == base
    changed = df.copy()
    changed.loc[123, "body"] = changed.loc[123, "body"] + "!"
    changed.to_csv(csv, index=False)
    assert load_dataset_splits(_cfg(csv)).digest != base
    relabelled = df.copy()
    relabelled.loc[7, "y"] = "b" if relabelled.loc[7, "y"] == "a" else "a"
    relabelled.to_csv(csv, index=False)
    assert load_dataset_splits(_cfg(csv)).digest != base


def test_content_digest_is_order_and_split_sensitive():
    df = pd.DataFrame({"text": ["a", "b"], "label": ["x", "y"]})
    empty = df.iloc[:0]
    d1 = content_digest({"train": df, "validation": empty, "test": empty})
    d2 = content_digest({"train": empty, "validation": empty, "test": df})
    assert d1 != d2


def test_deduplication_is_recorded(tmp_path):
    df = pd.DataFrame({"body": ["Hello  World", "hello world", "other text", "third one"] * 1 + [f"t{i}" for i in range(40)],
                       "y": ["a", "b", "a", "b"] + ["a", "b"] * 20})
    csv = tmp_path / "d.csv"
    df.to_csv(csv, index=False)
    s = load_dataset_splits(_cfg(csv, deduplicate=True))
    assert s.dedup == {"enabled": True, "removed": 1, "kept": 43, "texts_with_conflicting_labels": 1}
    assert sum(len(f) for f in s.frames().values()) == 43
    assert normalize_text("  Hello \n World ") == "hello world"


def test_given_splits_are_used(tmp_path):
    df = _frame(100)
    df["part"] = ["test" if i < 20 else "val" if i < 30 else "train" for i in range(100)]
    csv = tmp_path / "d.csv"
    df.to_csv(csv, index=False)
    s = load_dataset_splits(_cfg(csv, split_column="part"))
    assert (len(s.train), len(s.validation), len(s.test)) == (70, 10, 20)
    df.loc[0, "part"] = "holdout"
    df.to_csv(csv, index=False)
    with pytest.raises(InputError, match="holdout"):
        load_dataset_splits(_cfg(csv, split_column="part"))


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda p: None, "data file not found"),
        (lambda p: p.write_bytes("text,label\ncaf\xe9,a\n".encode("latin-1")), "not valid UTF-8"),
        (lambda p: p.write_text("text,label\n"), "has no rows"),
        (lambda p: p.write_text("words,label\nhi,a\n"), "column(s) ['text'] not in the data"),
    ],
)
def test_bad_files_give_clear_errors(tmp_path, make, fragment):
    path = tmp_path / "d.csv"
    make(path)
    with pytest.raises(InputError) as err:
        load_dataset_splits(DataConfig(path=str(path)))
    assert fragment in str(err.value)


def test_unknown_extension_and_bad_jsonl(tmp_path):
    odd = tmp_path / "d.txt"
    odd.write_text("x")
    with pytest.raises(InputError, match="data.format"):
        load_dataset_splits(DataConfig(path=str(odd)))
    bad = tmp_path / "d.jsonl"
    bad.write_text('{"text": "a", "label": "x"}\n{not json\n')
    with pytest.raises(InputError, match="cannot read"):
        load_dataset_splits(DataConfig(path=str(bad)))


def test_stratified_split_handles_tiny_classes():
    df = pd.DataFrame({"text": [str(i) for i in range(12)], "label": ["a"] * 10 + ["b", "c"]})
    parts = stratified_split(df, 0.15, 0.15, seed=1)
    assert sum(len(p) for p in parts.values()) == 12
    assert json.dumps(sorted(parts["train"]["text"])) == json.dumps(sorted(stratified_split(df, 0.15, 0.15, 1)["train"]["text"]))
