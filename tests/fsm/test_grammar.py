"""structgen/fsm/grammar*.py: EBNF and Lark grammar constraints with the real SmolLM2 tokenizer.

Every language is checked against an independent oracle: Python's re on a hand-written equivalent regex, and for Lark
grammars the `lark` package itself (Earley, lexer="dynamic_complete": the grammar's language over characters). Token
walks under the compiled masks must produce text the oracle accepts; near misses of that text (one character
changed) must be accepted by the constraint exactly when the oracle accepts them.
"""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

import structgen
from structgen.engine.requests import ConstraintSpec
from structgen.errors import (ConstraintError, ConstraintTooComplexError, InvalidGrammarError,
                              UnsupportedGrammarError)
from structgen.fsm import api, bitmask
from structgen.fsm.cache import default_cache
from structgen.fsm.grammar import MAX_INLINED_DEPTH, MAX_POSITIONS, detect_syntax

lark = pytest.importorskip("lark")


@pytest.fixture(scope="module")
def tok():
    return structgen.default_tokenizer()


@pytest.fixture(autouse=True)
def isolated_cache(tok, tmp_path, monkeypatch):
    monkeypatch.setenv("STRUCTGEN_CACHE_DIR", str(tmp_path))
    default_cache().clear()
    yield
    default_cache().clear()


def token_walk(c, rng: random.Random, budget: int = 12) -> str:
    """Random tokens from the masks, EOS when final (at random, and always once `budget` tokens are out). Half the
    time the pick is among tokens of one or two bytes, so that punctuation and closers come up; past the budget only
    tokens that bring the end closer (Cursor.token_fits; one-byte ones where they do), the way the engine closes an
    output in time."""
    vocab_bytes = api.Vocabulary.from_tokenizer(c.tokenizer).token_bytes
    eos = next(iter(c.tokenizer.eos_token_ids))
    cur = c.cursor()
    out = bytearray()
    for n in range(budget + 200):
        ids = [int(t) for t in cur.allowed_token_ids() if t != eos]
        if cur.is_final() and (not ids or n >= budget or rng.random() < 0.25):
            assert cur.advance(eos)
            return out.decode("utf-8")
        assert ids, f"nothing allowed after {bytes(out)!r}"
        if n >= budget:
            need = cur.min_tokens_to_finish()
            closer = [t for t in ids if len(vocab_bytes[t]) == 1 and cur.token_fits(t, need)]
            if not closer:  # the way out takes longer tokens: the mask of every token that fits
                row = np.zeros(c.num_words, dtype=np.int32)
                cur.fill_bitmask_within(row, need)
                closer = [int(t) for t in bitmask.unpack(row) if t < c.vocab_size and t != eos]
            t = rng.choice(closer)
        else:
            short = [t for t in ids if len(vocab_bytes[t]) <= 2]
            t = rng.choice(short) if short and rng.random() < 0.5 else rng.choice(ids)
        assert cur.advance(t)
        out += vocab_bytes[t]
    pytest.fail(f"the walk did not finish: {bytes(out)!r}")


def near_misses(texts: list[str], rng: random.Random, alphabet: str, n: int = 150) -> list[str]:
    """Strings one edit (insert, delete, replace) away from `texts`."""
    out = []
    for _ in range(n):
        s = rng.choice(texts)
        i = rng.randint(0, len(s))
        op = rng.randrange(3)
        if op == 0:
            s = s[:i] + rng.choice(alphabet) + s[i:]
        elif op == 1 and s:
            s = s[:max(i - 1, 0)] + s[i:]
        elif s:
            j = min(i, len(s) - 1)
            s = s[:j] + rng.choice(alphabet) + s[j + 1:]
        out.append(s)
    return out


def check_against(c, oracle, samples_ok, samples_bad, alphabet, seed=0, walks=6):
    rng = random.Random(seed)
    walked = [token_walk(c, rng) for _ in range(walks)]
    for text in walked:
        assert oracle(text), f"the constraint generated {text!r}, which the grammar rejects"
    for s in samples_ok:
        assert oracle(s), f"bad test sample {s!r}"
        assert c.accepts(s), f"the constraint rejects {s!r}, which the grammar accepts"
    for s in samples_bad:
        assert not oracle(s), f"bad test sample {s!r}"
        assert not c.accepts(s), f"the constraint accepts {s!r}, which the grammar rejects"
    for s in near_misses(walked + list(samples_ok), rng, alphabet):
        assert c.accepts(s) == oracle(s), f"{s!r}: constraint {c.accepts(s)}, grammar {oracle(s)}"


# --------------------------------------------------------------------------------------------------- EBNF
EBNF = {
    "literals": (r'root ::= "a\"b" "\\" "\u00e9" | "x\ty" "\x41"', r'a"b\\é|x\tyA',
                 ['a"b\\é', "x\tyA"], ['a"b\\e', "x yA", ""], 'a"b\\éxy\tA '),
    "classes": (r'root ::= [a-z] [^a-z0-9\n] [\-\]x] [\u4e00-\u9fff]', r'[a-z][^a-z0-9\n][\-\]x][\u4e00-\u9fff]',
                ["a-x中", "zé]字", "q\t-一"], ["aax中", "a\nx中", "a-y中", "a-x"], "az09-]x\n中字é "),
    "counts": (r'root ::= [0-9]{2,4} "-" [a-c]{3} "x"{2,} ("ab"){0,2} "!"{0}', r'[0-9]{2,4}-[a-c]{3}x{2,}(ab){0,2}',
               ["12-abcxx", "1234-cccxxxxxabab"], ["1-abcxx", "12345-abcxx", "12-abxx", "12-abcx", "12-abcxxababab"],
               "0129-abcx"),
    "nested groups": (r'root ::= ("a" ("b" | "c"+)? | "d" ("e" | ("f" "g")*))+ "."', r'(a(b|c+)?|d(e|(fg)*))+\.',
                      ["a.", "abdfgfgacc.", "dde."], [".", "abc.", "dfgf.", "a"], "abcdefg."),
    "right recursion": ("root ::= list\nlist ::= item (\",\" ws list)?\nitem ::= [a-z]+ | [0-9]+\nws ::= \" \"?",
                        r'([a-z]+|[0-9]+)(, ?([a-z]+|[0-9]+))*', ["a", "ab, 12,c", "7,7"], ["a,", "a1", ",a", "a,  b"],
                        "ab12, "),
    "left recursion": ("root ::= expr\nexpr ::= expr [+-] term | term\nterm ::= [0-9]+", r'[0-9]+([+-][0-9]+)*',
                       ["1", "12+3-45"], ["+1", "1+", "1++2"], "0123+-"),
    "mutual recursion": ('root ::= a\na ::= "x" b | "."\nb ::= "y" a | "y"', r'(xy)*(xy|\.)',
                         [".", "xy", "xyxy.", "xyxyxy"], ["x", "xyx", "..", "xy.."], "xy."),
    "dot and comments": ('# a comment\nroot ::= "<" .{1,3} ">"   # any characters\n'
                         '       | "[" [^] "]"  # [^] too\n', r'<[\s\S]{1,3}>|\[[\s\S]\]',
                         ["<a>", "<\n\n>", "[]]", "<中é>"], ["<>", "<abcd>", "[]", "[ab]"], "<>[]a\n"),
    "json string": ('root ::= "\\"" char* "\\""\nchar ::= [^"\\\\\\x00-\\x1f] | "\\\\" escape\n'
                    'escape ::= ["\\\\/bfnrt] | "u" [0-9A-Fa-f]{4}',
                    r'"([^"\\\x00-\x1f]|\\(["\\/bfnrt]|u[0-9A-Fa-f]{4}))*"',
                    ['""', '"a\\n\\u00e9\\"x"', '"中"'], ['"', '"\\x"', '"a\nb"', '"\\u12"'], 'a"\\nu0eF\n'),
}


@pytest.mark.parametrize("name", sorted(EBNF))
def test_ebnf_walks_and_near_misses_agree_with_re(tok, name):
    grammar, regex, ok, bad, alphabet = EBNF[name]
    c = api.compile_constraint("grammar", grammar, tok, syntax="ebnf")
    check_against(c, lambda s: re.fullmatch(regex, s) is not None, ok, bad, alphabet)


def test_ebnf_start_option_and_unreachable_rules(tok):
    # an unreachable rule may be anything, even not regular
    g = 'root ::= "a"\nother ::= "b"+\nnested ::= "(" nested ")" | "x"'
    assert api.compile_grammar(g, tok).accepts("a")
    c = api.compile_grammar(g, tok, start="other")
    assert c.accepts("bbb") and not c.accepts("a")


# --------------------------------------------------------------------------------------------------- Lark
LARK = {
    "ignore ws": (r'''
        %import common.NUMBER
        %import common.WS
        %ignore WS
        start: pair ("," pair)*
        pair: KEY "=" NUMBER
        KEY: /[a-z]+/
        ''', ["a=1", "ab = 1.5e3 ,c=.5 ", "x\n=\t2"], [" a=1", "a b=1", "a=1 2", "a=", "a=1,"], "ab=1.5e, \n"),
    "right recursion": ('''
        start: list
        list: item ("," list)?
        item: "id"i ":" INT
        %import common.INT
        ''', ["id:1", "ID:12,iD:3"], ["id:", "id:1,", "i d:1", "di:1"], "idID:12,"),
    "left recursion": ('?start: a\na: a "x" | "y"\n', ["y", "yxxx"], ["", "x", "yy", "xy"], "xy"),
    "common terminals": (r'''
        %import common (ESCAPED_STRING, SIGNED_NUMBER, CNAME, WS_INLINE)
        %ignore WS_INLINE
        start: CNAME "=" (ESCAPED_STRING | SIGNED_NUMBER) ~ 1..3
        ''', ['a="x"', '_b1 = "a\\"b" -2.5', 'x=1 2 3'], ['1a="x"', 'a="x" "y" 1 2', 'a="x\\"', 'a=+'],
        'a_1="\\ -+.e '),
    "ranges, options, flags": (r'''
        start: "a".."c"+ [ "-" DIGIT~2 ]      // a range, an optional group, a count
             | /x{2}y?/i -> shouty
             | _Z
        DIGIT: "0".."9"
        _Z.2: "z" | "Z"     // a priority
        ''', ["a", "cab-42", "XxY", "xx", "Z"], ["a-4", "d", "xxyy", "-42", "zz"], "abc-42xyXYzZ"),
    "comments and numbers": (r'''
        %import common (NUMBER, HEXDIGIT, C_COMMENT, CPP_COMMENT, NEWLINE)
        start: item (NEWLINE item)*
        ?item: NUMBER | HEXDIGIT | C_COMMENT | CPP_COMMENT
        ''', ["1.5", "f\n/* a */\n// b", "/***/\r\n1e5"], ["/* a */ */", "// a\n", "1.5.5", "g"], "1.5e/*\n/ fa"),
    "ignore strings and regexes": (r'''
        %ignore " "
        %ignore /#[^\n]*\n/
        start: "a" "b"*
        ''', ["a", "a b  b", "a #x\nb "], ["ba", " a", "a c"], "ab #\nc"),
    "sql subset": (r'''
        %import common (WS, CNAME, SIGNED_NUMBER, ESCAPED_STRING)
        %ignore WS
        start: statement (";" statement)* ";"?
        ?statement: select | delete
        select: "SELECT"i columns "FROM"i CNAME where? limit?
        columns: "*" | column ("," column)*
        column: CNAME ("AS"i CNAME)?
        where: "WHERE"i condition (("AND"i | "OR"i) condition)*
        condition: CNAME OP value
        OP: "=" | "!=" | "<" | ">" | "<=" | ">="
        ?value: SIGNED_NUMBER | ESCAPED_STRING | CNAME
        limit: "LIMIT"i SIGNED_NUMBER
        delete: "DELETE"i "FROM"i CNAME where?
        ''', ["SELECT * FROM t", "select a AS b, c from t where a >= 1 and b = \"x\" limit 5;delete FROM u"],
        ["SELECT FROM t", "SELECT * FROM t WHERE", "DELETE t", "SELECT * FROM t;;"], "SELCT*FROMt ;=<>1\"a"),
}


def _lark_oracle(grammar: str):
    parser = lark.Lark(grammar, parser="earley", lexer="dynamic_complete")
    ignores = "%ignore" in grammar

    def accepts(s: str) -> bool:
        try:
            parser.parse(s)
        except lark.exceptions.LarkError:
            return False
        # NOTE: lark also skips %ignore text before the first terminal; the constraint does not generate it (as
        # llguidance and xgrammar read %ignore), so text that only parses that way is outside the language here.
        # Every ignore pattern in these tests starts with a space, a tab, a newline or '#', and no first terminal
        # does.
        return not ignores or s[:1] not in tuple(" \t\n\r\f#")

    return accepts


@pytest.mark.parametrize("name", sorted(LARK))
def test_lark_walks_and_near_misses_agree_with_lark(tok, name):
    grammar, ok, bad, alphabet = LARK[name]
    c = api.compile_constraint("grammar", grammar, tok, syntax="lark")
    check_against(c, _lark_oracle(grammar), ok, bad, alphabet)


def test_lark_right_recursion_agrees_with_re_too(tok):
    grammar = LARK["right recursion"][0]
    c = api.compile_grammar(grammar, tok, syntax="lark")
    regex = r"(?i:id):[0-9]+(,(?i:id):[0-9]+)*"
    check_against(c, lambda s: re.fullmatch(regex, s) is not None, ["id:0"], ["id:a"], "idID:0,", seed=3)


def test_lark_unicode_classes_stay_inside_python_re(tok):
    # \w and \S are Unicode in re; only part of them is generated (the module docstring), never more
    grammar = r'start: /\w+/ " " /[^\W\d]\S*/'
    c = api.compile_grammar(grammar, tok, syntax="lark")
    oracle = _lark_oracle(grammar)
    rng = random.Random(5)
    for _ in range(8):
        text = token_walk(c, rng)
        assert oracle(text) and re.fullmatch(r"\w+ [^\W\d]\S*", text), text
    assert c.accepts("ab_1 x9") and c.accepts("٣ a\u00e9") and not c.accepts("a 9")


def test_xgrammar_count_syntax_in_lark(tok):
    c = api.compile_grammar('start: "a"{2,3} "b"{,1} "c"{2,}', tok, syntax="lark")
    regex = r"a{2,3}b?c{2,}"
    check_against(c, lambda s: re.fullmatch(regex, s) is not None, ["aacc", "aaabccc"], ["acc", "aabbcc", "aac"],
                  "abc")


# --------------------------------------------------------------------------------------------- refusals
NOT_REGULAR = [
    ("ebnf", 'root ::= "(" root ")" | "x"', {"root"}),
    ("ebnf", 'root ::= value\nvalue ::= array | "1"\narray ::= "[" (value ("," value)*)? "]"', {"value", "array"}),
    ("ebnf", 'root ::= s\ns ::= "a" t | "b"\nt ::= s "c"', {"s", "t"}),  # a^n b c^n: linear, but both sides
    ("ebnf", 'root ::= a\na ::= "x" a | a "y" | "z"', {"a"}),  # right and left in one group
    ("lark", 'start: "(" start ")" | "x"', {"start"}),
    ("lark", '?start: value\nvalue: "{" [pair ("," pair)*] "}" | NUMBER\npair: /[a-z]+/ ":" value\n'
             '%import common.NUMBER', {"value", "pair"}),
]


@pytest.mark.parametrize("syntax, grammar, rules", NOT_REGULAR)
def test_grammars_that_are_not_regular_are_refused_naming_their_rules(tok, syntax, grammar, rules):
    with pytest.raises(UnsupportedGrammarError) as e:
        api.compile_grammar(grammar, tok, syntax=syntax)
    assert set(e.value.rules) == rules
    msg = str(e.value)
    assert "not regular" in msg and "json_schema" in msg
    assert all(repr(r) in msg for r in rules)
    assert isinstance(e.value, ConstraintError)


def test_recursion_inside_a_repetition_is_refused():
    # x(,x)* as a language, but the recursion sits inside a repetition: refused, not guessed
    with pytest.raises(UnsupportedGrammarError, match="inside a repetition"):
        api.compile_grammar('root ::= "x" ("," root)*')


INVALID = [
    ("ebnf", 'root = "a"', 1, 6, "'::='"),
    ("ebnf", 'root ::= "a\nb ::= "c"', 1, 12, "raw newline"),
    ("ebnf", 'root ::= "a" b', 1, 14, "'b' (used by 'root') is not defined"),
    ("ebnf", 'root ::= "a"\nroot ::= "b"', 2, 1, "defined twice"),
    ("ebnf", 'root ::=\n  "a\\q"', 2, 5, "unknown escape"),
    ("ebnf", 'root ::= "a"{,3}', 1, 13, "lower bound"),
    ("ebnf", 'root ::= "a"++', 1, 14, "two repetition operators"),
    ("ebnf", 'root ::= ("a" | "b"', 1, 10, "missing ')'"),
    ("ebnf", 'root ::= [z-a]', 1, 14, "ends before it starts"),
    ("ebnf", 'root ::= "\\x123"', 1, 11, "ambiguous"),
    ("ebnf", 'item ::= "a"', None, None, "no rule 'root'"),
    ("lark", 'start: "a\n', 1, 8, "unterminated string"),
    ("lark", 'start "a"', 1, 7, "expected ':'"),
    ("lark", 'start: A\n', 1, 8, "'A' (used by 'start') is not defined"),
    ("lark", 'start: A\nA: "x" A', 2, 1, "recursive"),
    ("lark", 'start: A\nA: "x" b\nb: "y"', 2, 8, "terminal cannot use the rule"),
    ("lark", 'item: "a"', None, None, "no rule 'start'"),
    ("lark", '%import common.NOPE', 1, 16, "no terminal 'NOPE'"),
    ("lark", 'start: /a(/', 1, 8, "re"),
]


@pytest.mark.parametrize("syntax, grammar, line, column, needle", INVALID)
def test_syntax_errors_say_where(tok, syntax, grammar, line, column, needle):
    with pytest.raises(InvalidGrammarError) as e:
        api.compile_grammar(grammar, tok, syntax=syntax)
    assert (e.value.line, e.value.column) == (line, column), str(e.value)
    assert needle in str(e.value)
    if line is not None:
        assert f"line {line}, column {column}" in str(e.value)


UNSUPPORTED = [
    ("ebnf", 'root ::= "a" (= "b")', "lookahead"),
    ("ebnf", 'root ::= TagDispatch(("<a>", b))\nb ::= "x"', "TagDispatch"),
    ("ebnf", 'root[temperature=0.5] ::= "a"', "rule options"),
    ("lark", '%declare X\nstart: "a"', "%declare"),
    ("lark", '_sep{x, s}: x (s x)*\nstart: _sep{"a", ","}', "templates"),
    ("lark", '%import python.NAME\nstart: NAME', "only the `common` library"),
    ("lark", 'start: /a(?=b)b/', "lookarounds"),
    ("lark", 'start: /^a/', "anchors"),
    ("lark", 'start: /(a)\\1/', "backreferences"),
    ("lark", 'start: "a" <|tool|>', "special tokens"),
    ("lark", 'start: %json {"type": "integer"}', "%json"),
    ("lark", 'start[lazy]: "a"', "rule attributes"),
    ("lark", 'start: /a b/x', "flag 'x'"),
    ("lark", '%override start: "b"\nstart: "a"', "%override"),
]


@pytest.mark.parametrize("syntax, grammar, needle", UNSUPPORTED)
def test_unsupported_features_are_refused_clearly(tok, syntax, grammar, needle):
    with pytest.raises(UnsupportedGrammarError) as e:
        api.compile_grammar(grammar, tok, syntax=syntax)
    assert needle in str(e.value)
    assert e.value.line is not None


def test_sizes_are_bounded(tok):
    with pytest.raises(ConstraintTooComplexError, match="character positions"):
        api.compile_grammar(f'root ::= [a-z]{{{MAX_POSITIONS + 1}}}', tok)
    # rules doubling each other: 2**40 characters inlined, found without building them
    chain = "\n".join(f'r{i} ::= r{i + 1} r{i + 1}' for i in range(40))
    with pytest.raises(ConstraintTooComplexError, match="character positions"):
        api.compile_grammar(f'root ::= r0\n{chain}\nr40 ::= "a"', tok)
    # each level an alternation around a sequence: nothing to splice into one flat node
    deep = "\n".join(f'r{i} ::= "(" r{i + 1} ")" | "x"' for i in range(MAX_INLINED_DEPTH // 2 + 1))
    with pytest.raises(ConstraintTooComplexError, match="nesting depth"):
        api.compile_grammar(f'root ::= r0\n{deep}\nr{MAX_INLINED_DEPTH // 2 + 1} ::= "x"', tok)
    classes = " ".join(f"[\\U{0x1000 + 20000 * i:08x}-\\U{0x1000 + 20000 * i + 19999:08x}]" for i in range(16))
    with pytest.raises(ConstraintTooComplexError, match="character classes"):
        api.compile_grammar(f"root ::= {classes}", tok)


def test_compile_limits_bound_the_automaton(tok):
    from structgen.fsm.limits import CompileLimits

    grammar = LARK["sql subset"][0]
    with pytest.raises(ConstraintTooComplexError, match="automaton states"):
        api.compile_grammar(grammar, tok, limits=CompileLimits(max_states=500, compile_timeout_s=30))
    assert api.compile_grammar(grammar, tok).accepts("DELETE FROM t")


def test_a_grammar_that_matches_nothing_is_refused(tok):
    with pytest.raises(InvalidGrammarError, match="matches no string"):
        api.compile_grammar('root ::= a\na ::= "x" a', tok)


# ------------------------------------------------------------------------------------------ the compile API
def test_syntax_is_detected_and_keyed(tok):
    ebnf, lark_text = 'root ::= "a" [0-9]', 'start: "a" /[0-9]/'
    assert detect_syntax(ebnf) == "ebnf" and detect_syntax(lark_text) == "lark"
    c = api.compile_constraint("grammar", lark_text, tok)
    assert c is api.compile_constraint("grammar", lark_text, tok, syntax="lark")
    assert c.kind == "grammar" and c.accepts("a5") and not c.accepts("a")
    # the syntax is part of the key: a failure under one syntax is not served for the other
    with pytest.raises(InvalidGrammarError):
        api.compile_constraint("grammar", ebnf, tok, syntax="lark")
    assert api.compile_constraint("grammar", ebnf, tok, syntax="ebnf").accepts("a7")
    two = 'start: "a"\nother: "b"'
    assert api.compile_grammar(two, tok).key != api.compile_grammar(two, tok, start="other").key


def test_bad_options(tok):
    with pytest.raises(TypeError, match="unknown grammar option"):
        api.compile_constraint("grammar", 'root ::= "a"', tok, options={"syntax": "ebnf"})
    with pytest.raises(ConstraintError, match="syntax"):
        api.compile_constraint("grammar", 'root ::= "a"', tok, syntax="gbnf2")
    with pytest.raises(TypeError):
        api.compile_constraint("grammar", {"root": "a"}, tok)


def test_engine_spec_through_the_process_pool(tok):
    from structgen.fsm.compile_pool import CompilePool

    spec = ConstraintSpec(kind="grammar", value='start: WORD ("-" WORD)*\n%import common.WORD',
                          options={"syntax": "lark"})
    bad = ConstraintSpec(kind="grammar", value='root ::= "(" root ")" | "x"', options={"syntax": "ebnf"})
    pool = CompilePool(tok, workers=1, max_queue=4)
    try:
        c, status = pool.compile(spec.kind, spec.value, spec.options)
        assert status == "miss" and c.accepts("ab-cd") and not c.accepts("ab-")
        with pytest.raises(UnsupportedGrammarError) as e:
            pool.compile(bad.kind, bad.value, bad.options)
        assert e.value.rules == ("root",)
    finally:
        pool.close()
