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


@pytest.mark.parametrize("stop,matched", [
    (("END", "zzz"), "END"),
    (("zzz", "and more"), "and more"),                  # the string that matched, not the first listed
    (("more", "END"), "END"),                           # the earliest match in the text wins
])
def test_stop_string_names_the_string_that_ended_the_text(tok, stop, matched):
    _, d = stream(tok, tok.encode('{"a": 1}\n\nEND and more text'), stop=stop)
    assert d.stopped and d.stop_string == matched


@pytest.mark.parametrize("stop", [("\n\nEND", "\n\n"), ("\n\n", "\n\nEND")])
def test_two_stop_strings_matching_at_one_place_name_the_first_listed(tok, stop):
    # Token by token "\n\n" would complete first; one add of the whole text finds both at the same place.
    ids = tok.encode('{"a": 1}\n\nEND and more text')
    _, d = stream(tok, ids, stop=stop, step=len(ids))
    assert d.text == '{"a": 1}' and d.stop_string == stop[0]


def test_no_stop_string_without_a_match(tok):
    _, d = stream(tok, tok.encode("nothing to see here"), stop=("STOP",))
    assert not d.stopped and d.stop_string is None
    _, d = stream(tok, tok.encode("nothing to see here"))
    assert d.stop_string is None


def test_a_refused_match_is_not_the_stop_string(tok):
    d = IncrementalDetokenizer(tok, ("x", ";"), accept=lambda before: before.endswith("2"))
    d.add(tok.encode("1x 2;"))
    assert d.stopped and d.text == "1x 2" and d.stop_string == ";"
