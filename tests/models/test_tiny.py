"""The character tokenizer loads back faithfully: one id per character, spaces kept."""
import json

from areal_mega.models.tiny import build_char_tokenizer, load_tokenizer

TEXT = "Compute 23+45. \\boxed{68}"


def _roundtrip(tok):
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    return ids, tok.decode(ids)


def test_char_tokenizer_keeps_spaces_after_save_and_reload(tmp_path):
    tok = build_char_tokenizer(tmp_path / "a")
    ids, text = _roundtrip(tok)
    assert text == TEXT and len(ids) == len(TEXT)
    assert ids[TEXT.index(" ")] == tok.convert_tokens_to_ids(" ")
    # saved again (as HF export does): whatever tokenizer_class transformers writes, it loads as WordLevel
    tok.save_pretrained(str(tmp_path / "b"))
    (tmp_path / "b" / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    again = load_tokenizer(tmp_path / "b")
    assert _roundtrip(again) == (ids, TEXT)
    assert again.eos_token_id == tok.eos_token_id == 1
