from __future__ import annotations

import pytest

from service.tokenizer import OOV_ID, PAD_ID, Tokenizer, split_words


def test_normalisation_rules():
    assert split_words("Great movie!<br /><br />I LOVED it... Don't miss it?!") == [
        "great", "movie", "!", "i", "loved", "it", "dont", "miss", "it", "?", "!",
    ]  # fmt: skip
    assert split_words("It’s a 10/10 café_au_lait 😀👍") == ["its", "a", "10", "10", "café", "au", "lait"]
    assert split_words("<BR>line<br/>break") == ["line", "break"]
    assert split_words("   ") == []


def test_the_ascii_fast_path_follows_the_same_rules_as_the_regex(monkeypatch):
    """ASCII texts skip the Unicode regex; both paths must cut every text alike (fuzzed, and on tricky cases)."""
    import random
    import re

    from service import tokenizer

    def regex_only(text: str) -> list[str]:
        text = tokenizer._apostrophe.sub("", tokenizer._break.sub(" ", text.lower()))
        return tokenizer._token.findall(text)

    rng = random.Random(0)
    pieces = [chr(c) for c in range(128)] + ["<br />", "<br>", "<BR/>", "<br\t/>", "don't", "a_b", "10/10", "!?", "  "]
    cases = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 60))) for _ in range(5000)]
    cases += ["It's", "x`y", "wow!!", "why?", "_", "a__b", "\x00", "\t\n\r\x0b\x0c", "<br", "<br /"]
    for text in cases:
        assert text.isascii()
        assert split_words(text) == regex_only(text), repr(text)
    assert re.fullmatch(r"[\x00-\x7f]*", "".join(cases))


def test_vocabulary_is_ranked_by_frequency_then_alphabetically():
    tok = Tokenizer.fit(["b a a c", "b a d"], max_vocab=5, min_count=1)
    assert tok.vocabulary == ["<pad>", "<oov>", "a", "b", "c"]
    assert tok.encode("a b c d zzz").ids == [2, 3, 4, OOV_ID, OOV_ID]


def test_min_count_drops_rare_words():
    tok = Tokenizer.fit(["common common rare"], max_vocab=100, min_count=2)
    assert "rare" not in tok.vocabulary and "common" in tok.vocabulary


def test_text_without_tokens_is_one_oov_step():
    tok = Tokenizer(["<pad>", "<oov>", "good"])
    encoded = tok.encode("😀 ...")
    assert encoded.ids == [OOV_ID] and not encoded.truncated and encoded.n_tokens == 1
    assert PAD_ID not in encoded.ids


def test_long_texts_keep_head_and_tail():
    vocab = ["<pad>", "<oov>", *[f"w{i}" for i in range(100)]]
    tok = Tokenizer(vocab, max_length=10, head_length=4)
    encoded = tok.encode(" ".join(f"w{i}" for i in range(30)))
    assert encoded.truncated and encoded.n_tokens == 30
    assert encoded.ids == [2, 3, 4, 5] + [i + 2 for i in range(24, 30)]
    assert not tok.encode("w1 w2").truncated
    head_only = Tokenizer(vocab, max_length=10, head_length=10).encode(" ".join(f"w{i}" for i in range(30)))
    assert head_only.ids == [i + 2 for i in range(10)]


def test_save_and_load_round_trip(tmp_path):
    tok = Tokenizer.fit(["one two three two"], max_vocab=10, min_count=1, max_length=7, head_length=3)
    tok.save(tmp_path)
    again = Tokenizer.load(tmp_path)
    assert again.vocabulary == tok.vocabulary and (again.max_length, again.head_length) == (7, 3)
    assert again.encode("three two one").ids == tok.encode("three two one").ids


def test_invalid_vocabularies_and_limits_are_refused(tmp_path):
    with pytest.raises(ValueError):
        Tokenizer(["a", "b"])
    with pytest.raises(ValueError):
        Tokenizer(["<pad>", "<oov>"], max_length=10, head_length=11)
    tok = Tokenizer(["<pad>", "<oov>", "x"])
    tok.save(tmp_path)
    (tmp_path / "vocab.txt").write_text("<pad>\n<oov>\n")
    with pytest.raises(ValueError, match="vocabulary has 2 lines"):
        Tokenizer.load(tmp_path)


def test_spans_point_into_the_text_as_sent_and_give_the_same_tokens():
    import random

    from service.tokenizer import split_words_with_spans
    from tests.test_training import ODD_PIECES

    text = "Broke after two days, DON'T buy!<br />İstanbul ΟΔΟΣ"
    spans = split_words_with_spans(text)
    assert [t for t, _, _ in spans] == split_words(text)
    # İ lower-cases to i + a combining dot (a separator): two tokens, the first one spanning the İ.
    assert [text[a:b] for _, a, b in spans] == ["Broke", "after", "two", "days", "DON'T", "buy", "!", "İ", "stanbul", "ΟΔΟΣ"]
    rng = random.Random(0)
    pieces = [*ODD_PIECES, "great", "Don't", "İİİ", "ΣΑΣ", "<br />", "it’s"]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) + rng.choice(["", " ", "'", "!", "<br/>"]) for _ in range(rng.randint(0, 15)))
        spans = split_words_with_spans(text)
        assert [t for t, _, _ in spans] == split_words(text), repr(text)
        assert all(0 <= a < b <= len(text) for _, a, b in spans) and [a for _, a, _ in spans] == sorted(a for _, a, _ in spans)


@pytest.mark.parametrize("alphabet", ["ascii", "unicode"])
def test_the_one_regex_spans_agree_with_the_character_by_character_path(alphabet):
    """Texts whose case folding keeps their length take a one-regex path; the character-by-character path, which
    any text can take, must give the same spans on them."""
    import random

    from service.tokenizer import _spans_by_character, split_words_with_spans

    rng = random.Random(1)
    pieces = [chr(c) for c in range(128)] + ["<br />", "<br>", "<BR/>", "<br\t/>", "don't", "'x'", "''", "a`b", "rock'n'roll", "a''b"]
    if alphabet == "unicode":
        pieces += ["é", "É", "e\u0301", "ß", "ΟΔΟΣ", "σας", "it’s", "‘quoted’", "´", "Ünïcödé", "映画", "✓", "٣", "\u00a0", "ǅ", "Ⅻ"]
    for _ in range(5000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        assert len(text.lower()) == len(text)  # the fast path: what this test is about
        assert split_words_with_spans(text) == _spans_by_character(text, text.lower()), repr(text)
        assert [t for t, _, _ in split_words_with_spans(text)] == split_words(text), repr(text)
