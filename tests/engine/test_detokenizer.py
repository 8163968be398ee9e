import pytest

from structgen import default_tokenizer
from structgen.engine.detokenizer import IncrementalDetokenizer


@pytest.fixture(scope="module")
def tok():
    return default_tokenizer()


def stream(tok, ids, stop=(), step=1):
    d = IncrementalDetokenizer(tok, stop)
    parts = []
    for i in range(0, len(ids), step):
        d.add(ids[i:i + step])
        parts.append(d.delta())
        if d.stopped:
            break
    parts.append(d.delta(final=True))
    return parts, d


def test_multibyte_characters_are_never_split(tok):
    text = "héllo wörld — 日本語のテキスト 🙂👍 done"
    ids = tok.encode(text)
    parts, _ = stream(tok, ids)
    assert "".join(parts) == text
    assert all("\ufffd" not in p for p in parts)
    # Some emoji takes several byte tokens: at least one step emitted nothing while waiting for bytes.
    assert "" in parts[:-1]


def test_stop_string_cuts_the_text_and_is_not_emitted(tok):
    ids = tok.encode('{"a": 1}\n\nEND and more text')
    parts, d = stream(tok, ids, stop=("\n\nEND",))
    assert d.stopped and "".join(parts) == '{"a": 1}'


def test_text_that_may_start_a_stop_string_is_held_back(tok):
    d = IncrementalDetokenizer(tok, ("STOP",))
    d.add(tok.encode("value ST"))
    assert not d.delta().endswith("ST")
    d.add(tok.encode("ILL fine"))
    assert "".join([d.delta(final=True)]).endswith("ILL fine")
    assert not d.stopped


def test_stop_string_spanning_tokens(tok):
    ids = tok.encode("abc xyz<|split|> tail")
    parts, d = stream(tok, ids, stop=("<|split|>",))
    assert "".join(parts) == "abc xyz" and d.stopped


@pytest.mark.parametrize("step", [1, 3])
def test_a_stop_match_the_accept_hook_refuses_is_skipped_and_the_search_goes_on(tok, step):
    # accept() sees the text before each match; refusing "a, b" and "a, b, c" leaves the third match to end it.
    seen = []

    def accept(before: str) -> bool:
        seen.append(before)
        return before.count(",") >= 2

    ids = tok.encode("a, b, c, d, e")
    d = IncrementalDetokenizer(tok, (", ",), accept=accept)
    for i in range(0, len(ids), step):
        d.add(ids[i:i + step])
        if d.stopped:
            break
    assert d.stopped and d.text == "a, b, c"
    assert seen == ["a", "a, b", "a, b, c"]
