"""JSONL loading: the shared data sets, field mapping, and errors naming path:line."""
import json

import pytest

from areal_mega.config import ConfigError, load_config
from areal_mega.data import DataConfig, DataError, data_dir, load_jsonl, load_records

needs_data = pytest.mark.skipif(not (data_dir() / "math500.jsonl").is_file(), reason=f"shared data absent at {data_dir()}")


@needs_data
@pytest.mark.parametrize("name, rows", [("math500", 500), ("aime24", 30), ("amc23", 40), ("deepscaler_train", 8288)])
def test_shared_sets_load(name, rows):
    records = load_jsonl(name)
    assert len(records) == rows
    assert all(r.problem and r.answer and r.source == name for r in records)
    assert len({r.id for r in records}) == rows


@needs_data
def test_known_answers():
    aime = {r.problem[:40]: r.answer for r in load_jsonl("aime24")}
    assert all(a.isdigit() and not a.startswith("0") for a in aime.values())  # README: zero padding removed
    math500 = load_jsonl("math500", id_key="unique_id")
    assert math500[0].id.startswith("test/") and math500[0].answer == "\\left( 3, \\frac{\\pi}{2} \\right)"


def test_env_override(tmp_path, monkeypatch):
    (tmp_path / "amc23.jsonl").write_text(json.dumps({"problem": "p", "answer": 27.0}) + "\n\n")
    monkeypatch.setenv("AREAL_MEGA_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    [rec] = load_jsonl("amc23")
    assert (rec.id, rec.problem, rec.answer, rec.source) == ("1", "p", "27", "amc23")
    monkeypatch.setenv("AREAL_MEGA_DATA_DIR", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="AREAL_MEGA_DATA_DIR"):
        load_jsonl("math500")


def test_field_mapping_via_config(tmp_path):
    f = tmp_path / "mine.jsonl"
    f.write_text("\n".join(json.dumps({"q": f"question {i}", "a": str(i), "uid": f"u{i}"}) for i in range(3)))
    yaml = tmp_path / "data.yaml"
    yaml.write_text(f"path: {f}\nproblem_key: q\nanswer_key: a\nid_key: uid\n")
    cfg = load_config(DataConfig, yaml)
    records = load_records(cfg)
    assert [(r.id, r.problem, r.answer) for r in records] == [(f"u{i}", f"question {i}", str(i)) for i in range(3)]


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ('{"problem": "p", "answer": "1"', "invalid JSON"),
        ('["problem", "answer"]', "expected a JSON object"),
        ('{"problem": "p"}', "missing field 'answer'"),
        ('{"problem": "", "answer": "1"}', "field 'problem' is empty"),
        ('{"problem": "p", "answer": {"x": 1}}', "field 'answer' must be a string or number"),
        ('{"problem": "p", "answer": true}', "field 'answer' must be a string or number"),
    ],
)
def test_malformed_line_names_path_and_line(tmp_path, bad_line, message):
    f = tmp_path / "bad.jsonl"
    good = json.dumps({"problem": "p", "answer": "1"})
    f.write_text(f"{good}\n\n{good}\n{bad_line}\n{good}\n")
    with pytest.raises(DataError, match=f"{f}:4: {message}"):
        load_jsonl(str(f))


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_jsonl(str(tmp_path / "nope.jsonl"))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no records"):
        load_jsonl(str(tmp_path / "empty.jsonl"))


def test_config_validation_names_field(tmp_path):
    yaml = tmp_path / "d.yaml"
    yaml.write_text("template: chatml\n")
    with pytest.raises(ConfigError, match="data.template"):
        load_config(DataConfig, yaml)
    with pytest.raises(ValueError, match="data.max_prompt_tokens"):
        DataConfig(max_prompt_tokens=0)
