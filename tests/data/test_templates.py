"""Prompt templates and the token budget."""
import pytest

from areal_mega.data import MathRecord, build_prompts, render_prompt
from areal_mega.data.templates import INSTRUCTION
from areal_mega.models.tiny import build_char_tokenizer


@pytest.fixture(scope="module")
def char_tok(tmp_path_factory):
    return build_char_tokenizer(tmp_path_factory.mktemp("tok"))


def test_quickstart_is_the_question():
    assert render_prompt("Compute 23+45.", "quickstart") == "Compute 23+45."


def test_qwen_zero_asks_for_boxed():
    text = render_prompt("What is 1+1?", "qwen_zero")
    assert "User: What is 1+1?\nAssistant:" in text and "\\boxed{}" in text
    assert text.endswith("Assistant:")


def test_r1_fallback_without_chat_template(char_tok):
    assert not getattr(char_tok, "chat_template", None)
    text = render_prompt("What is 1+1?", "r1_distill", char_tok)
    assert text == f"<｜begin▁of▁sentence｜><｜User｜>What is 1+1?\n{INSTRUCTION}<｜Assistant｜><think>\n"


def test_r1_uses_the_tokenizers_chat_template(char_tok):
    char_tok.chat_template = (
        "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    try:
        text = render_prompt("Q?", "r1_distill", char_tok)
    finally:
        char_tok.chat_template = None
    assert text == f"[user]Q?\n{INSTRUCTION}[assistant]"


def test_unknown_template():
    with pytest.raises(ValueError, match="unknown template 'chatml'"):
        render_prompt("q", "chatml")


def test_budget_filters_and_counts(char_tok):
    records = [MathRecord(str(i), "x" * n, "1", "t") for i, n in enumerate([5, 50, 10, 11, 200])]
    out = build_prompts(records, char_tok, "quickstart", max_prompt_tokens=10)
    assert [r.id for r in out.records] == ["0", "2"]
    assert out.num_filtered == 3
    assert [len(ids) for ids in out.input_ids] == [5, 10]
    assert char_tok.decode(out.input_ids[1]) == "x" * 10


def test_opens_think_follows_the_rendered_assistant_turn(char_tok):
    from areal_mega.data.templates import opens_think

    assert opens_think("r1_distill", char_tok)  # the fall-back ends with '<think>\n'
    assert not opens_think("quickstart") and not opens_think("qwen_zero")
    for template, expected in [("{% if add_generation_prompt %}[assistant]{% endif %}", False),
                               ("{% if add_generation_prompt %}[assistant]<think>\n{% endif %}", True),
                               ("{% if add_generation_prompt %}[assistant]<think>\n\n</think>\n\n{% endif %}", False)]:
        char_tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}" + template
        try:
            assert opens_think("r1_distill", char_tok) is expected, template
            records = [MathRecord("0", "x", "1", "t")]
            assert build_prompts(records, char_tok, "r1_distill", 1000).opens_think is expected
        finally:
            char_tok.chat_template = None
