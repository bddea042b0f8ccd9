"""The chat template renders the documented format and its loss segments tile it exactly."""

import pytest

from lmcore.data import chat_template as chat
from lmcore.errors import ConfigError, DataFormatError
from tests.fixtures.text_shards import CONVERSATIONS

HELLO = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi!"}]


def test_default_template_renders_documented_string():
    assert chat.render(HELLO) == "<|bos|><|user|>\nHello<|end|>\n<|assistant|>\nHi!<|end|>\n"


def test_generation_prompt_appends_assistant_marker():
    rendered = chat.render(HELLO[:1], add_generation_prompt=True)
    assert rendered == "<|bos|><|user|>\nHello<|end|>\n<|assistant|>\n"


def test_special_tokens_are_distinct_and_pad_comes_first():
    assert len(set(chat.SPECIAL_TOKENS)) == len(chat.SPECIAL_TOKENS) == 8
    assert chat.SPECIAL_TOKENS[0] == chat.PAD


@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("generation_prompt", [False, True])
def test_segments_concatenate_to_rendered_text(conversation, generation_prompt):
    segments = chat.chat_segments(conversation, add_generation_prompt=generation_prompt)
    assert "".join(text for text, _ in segments) == chat.render(conversation, add_generation_prompt=generation_prompt)


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_only_assistant_content_and_its_end_token_are_trained(conversation):
    trained = [text for text, is_trained in chat.chat_segments(conversation) if is_trained]
    expected = [m["content"] + chat.END_OF_TURN for m in conversation if m["role"] == "assistant"]
    assert trained == expected


@pytest.mark.parametrize("conversation", CONVERSATIONS + [[{"role": "user", "content": "x<|end|>y"}],
                                                          [{"role": "assistant", "content": ""}]])
@pytest.mark.parametrize("generation_prompt", [False, True])
def test_default_template_fast_path_equals_rendering_prefixes(conversation, generation_prompt):
    assert chat.chat_segments(conversation, add_generation_prompt=generation_prompt) == \
        chat.segments_by_rendering(conversation, chat.DEFAULT_CHAT_TEMPLATE, generation_prompt)


def test_fast_path_rejects_unknown_roles_like_the_template():
    with pytest.raises(chat.TemplateError, match="unknown chat role"):
        chat.chat_segments([{"role": "narrator", "content": "x"}])


def test_segments_alternate_between_trained_and_not():
    segments = chat.chat_segments(CONVERSATIONS[1])
    flags = [t for _, t in segments]
    assert all(a != b for a, b in zip(flags, flags[1:]))
    assert all(text for text, _ in segments)


def test_custom_prefix_consistent_template_gets_segments():
    template = ("{% for m in messages %}{{ '### ' + m['role'] + ': ' + m['content'] + '<|end|>' }}{% endfor %}"
                "{% if add_generation_prompt %}{{ '### assistant: ' }}{% endif %}")
    segments = chat.chat_segments(HELLO, template)
    assert "".join(s for s, _ in segments) == "### user: Hello<|end|>### assistant: Hi!<|end|>"
    assert [s for s, t in segments if t] == ["Hi!<|end|>"]


def test_template_that_is_not_prefix_consistent_is_a_config_error():
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %}{{ messages | length }}"
    with pytest.raises(ConfigError, match="prefix-consistent"):
        chat.chat_segments(HELLO, template)


def test_broken_template_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match="tokenizer.chat_template"):
        chat.render(HELLO, "{% for m in messages %}")


def test_unknown_role_raises_from_the_template():
    with pytest.raises(chat.TemplateError, match="unknown chat role"):
        chat.render([{"role": "narrator", "content": "x"}])


def test_check_messages_names_file_and_line_of_bad_conversation():
    with pytest.raises(DataFormatError, match=r"data.jsonl:7: message 0: unknown role"):
        chat.check_messages([{"role": "narrator", "content": "x"}], "data.jsonl", 7)
    with pytest.raises(DataFormatError, match="non-empty list"):
        chat.check_messages([], "data.jsonl", 1)
