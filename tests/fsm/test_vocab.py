"""Token id -> bytes for byte-level BPE and SentencePiece vocabularies, and the walk arrays of Vocabulary."""

import numpy as np
import pytest
from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers

import structgen
from structgen.fsm.vocab import Vocabulary, gpt2_unicode_to_byte, token_bytes_from_hf
from token_fakes import FakeTokenizer, toy_tokenizer

TEXTS = ['{"city": "Zürich"}', "Máximarca 😀 emoji 👩‍👩‍👧", "日本語のテキスト", 'a\\"b\n\tc', "  spaced   out  "]


@pytest.fixture(scope="module")
def real():
    tok = structgen.default_tokenizer()
    return tok, Vocabulary.from_tokenizer(tok)


def test_gpt2_byte_alphabet_is_a_bijection():
    table = gpt2_unicode_to_byte()
    assert len(table) == 256 and sorted(table.values()) == list(range(256))
    assert table["Ġ"] == 0x20 and table["Ċ"] == 0x0A and table["A"] == 0x41 and table["Ā"] == 0x00


@pytest.mark.parametrize("text", TEXTS)
def test_real_token_bytes_concatenate_to_the_text(real, text):
    tok, vocab = real
    ids = tok.encode(text)
    assert b"".join(vocab.token_bytes[i] for i in ids) == text.encode("utf-8")


def test_real_vocab_has_tokens_holding_part_of_a_utf8_character(real):
    tok, vocab = real
    ids = tok.encode("😀 Zürich")
    partial = [i for i in ids if _not_utf8(vocab.token_bytes[i])]
    assert partial, "expected a byte-level token that splits a multi-byte character"


def _not_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def test_real_token_bytes_agree_with_hf_decode(real):
    tok, vocab = real
    checked = 0
    for i in range(0, vocab.vocab_size, 7):
        b = vocab.token_bytes[i]
        if b and not _not_utf8(b):
            assert b.decode("utf-8") == tok.decode([i]), i
            checked += 1
    assert checked > 5000


def test_special_and_eos_tokens_have_no_bytes(real):
    tok, vocab = real
    assert vocab.eos_token_ids.tolist() == sorted(tok.eos_token_ids)
    for i in tok.special_token_ids | tok.eos_token_ids:
        assert vocab.token_bytes[i] == b""
    assert not set(vocab.walk_ids.tolist()) & set(tok.special_token_ids)


def test_walk_arrays_describe_every_token_with_bytes():
    tok = toy_tokenizer()
    vocab = Vocabulary.from_tokenizer(tok)
    tb = vocab.token_bytes
    assert set(vocab.walk_ids.tolist()) == {i for i, b in enumerate(tb) if b}
    assert tok.eos_token_id not in vocab.walk_ids and tok.pad_token_id not in vocab.walk_ids
    assert np.all(np.diff(vocab.walk_lengths) <= 0)  # longest first
    for row, i in enumerate(vocab.walk_ids.tolist()):
        n = int(vocab.walk_lengths[row])
        assert n == len(tb[i])
        assert bytes(vocab.walk_bytes[:n, row].tolist()) == tb[i]
        assert not vocab.walk_bytes[n:, row].any()
        first = tb[i][0]
        group = vocab.by_first_byte[vocab.first_byte_start[first]:vocab.first_byte_start[first + 1]]
        assert row in group.tolist()
    for p in range(vocab.max_token_len + 1):
        assert vocab.longer_than[p] == int(np.sum(vocab.walk_lengths > p))
    assert sorted(vocab.by_first_byte.tolist()) == list(range(vocab.walk_ids.size))
    assert vocab.num_words == (tok.vocab_size + 31) // 32


def test_vocabulary_is_memoized_per_tokenizer():
    tok = toy_tokenizer()
    assert Vocabulary.from_tokenizer(tok) is Vocabulary.from_tokenizer(tok)


def test_bad_vocabularies_raise():
    with pytest.raises(ValueError):
        Vocabulary.from_token_bytes([b"a"], eos_token_ids=[5], fingerprint="x")
    with pytest.raises(ValueError):
        Vocabulary.from_token_bytes([b"a", b"b"], eos_token_ids=[0], fingerprint="x", vocab_size=1)
    with pytest.raises(TypeError):
        Vocabulary.from_tokenizer(object())


def _sentencepiece_tokenizer() -> HFTokenizer:
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x41>": 3, "<0xC3>": 4, "<0xBC>": 5, "▁": 6, "▁he": 7,
             "llo": 8, "h": 9, "e": 10, "l": 11, "o": 12, "▁h": 13, "ll": 14}
    merges = [("▁", "h"), ("▁h", "e"), ("l", "l"), ("ll", "o")]
    hf = HFTokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True))
    hf.pre_tokenizer = pre_tokenizers.Metaspace()
    hf.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                    decoders.Strip(" ", 1, 0)])
    hf.add_special_tokens(["<s>", "</s>"])
    return hf


def test_sentencepiece_metaspace_and_byte_fallback():
    hf = _sentencepiece_tokenizer()
    tb = token_bytes_from_hf(hf)
    assert tb[7] == b" he" and tb[6] == b" " and tb[8] == b"llo"
    assert tb[3] == b"A" and tb[4] == b"\xc3" and tb[5] == b"\xbc"
    assert tb[1] == b"" and tb[2] == b""  # added special tokens
    ids = hf.encode("hello ü").ids
    assert b"".join(tb[i] for i in ids) == " hello ü".encode("utf-8")  # the dummy prefix space is real output


def test_unsupported_decoder_is_a_clear_error():
    hf = HFTokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    hf.decoder = decoders.WordPiece()
    with pytest.raises(ValueError, match="unsupported tokenizer decoder"):
        token_bytes_from_hf(hf)


def test_fake_tokenizer_vocab_size_includes_specials():
    tok = FakeTokenizer(["a", "b"])
    vocab = Vocabulary.from_tokenizer(tok)
    assert vocab.vocab_size == 4 and vocab.eos_token_ids.tolist() == [2]
    assert np.array_equal(np.sort(vocab.walk_ids), [0, 1])
