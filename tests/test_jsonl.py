"""The shared JSONL reader: blank lines skipped, true line numbers, bad lines named `path:line:`."""
import pytest

from areal_mega.jsonl import JsonlError, iter_jsonl


def test_blank_lines_skipped_and_line_numbers_kept(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text('{"x": 1}\n\n   \n{"x": 2, "y": [3]}\n\t\n{"x": "é"}')  # no final newline
    assert list(iter_jsonl(f)) == [(1, {"x": 1}), (4, {"x": 2, "y": [3]}), (6, {"x": "é"})]


def test_empty_file_yields_nothing(tmp_path):
    f = tmp_path / "empty.jsonl"
    f.write_text("\n\n")
    assert list(iter_jsonl(f)) == []


def test_malformed_line_names_path_and_line_after_blanks(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"x": 1}\n\n{"x": \n{"x": 3}\n')  # line 3 is cut off after `{"x":` (5 characters)
    it = iter_jsonl(str(f))
    assert next(it) == (1, {"x": 1})
    with pytest.raises(JsonlError, match=rf"^{f}:3: invalid JSON: Expecting value \(column 6\)"):
        next(it)


@pytest.mark.parametrize("line, kind", [("[1, 2]", "list"), ("7", "int"), ('"s"', "str"), ("null", "NoneType")])
def test_non_object_line_refused(tmp_path, line, kind):
    f = tmp_path / "rows.jsonl"
    f.write_text(f'\n{{"x": 1}}\n{line}\n')
    with pytest.raises(JsonlError, match=rf"^{f}:3: expected a JSON object, got {kind}$"):
        list(iter_jsonl(f))


def test_error_is_a_value_error_and_missing_file_is_not_found(tmp_path):
    assert issubclass(JsonlError, ValueError)
    with pytest.raises(FileNotFoundError):
        list(iter_jsonl(tmp_path / "nope.jsonl"))
