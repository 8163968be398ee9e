"""`format` values as regexes over the decoded string, strict enough that what they admit passes
jsonschema's FormatChecker (and the RFCs) — they admit a subset of valid values, never an invalid one."""

from __future__ import annotations

import jsonschema

_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_H16 = r"[0-9a-fA-F]{1,4}"
# Days valid in every year (Feb 29 left out: it is valid only in leap years); year 0000 does not exist (Python's date,
# which jsonschema checks with, starts at year 1).
_YEAR = r"([1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"
_DATE = (_YEAR + r"-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)"
         r"|02-(0[1-9]|1[0-9]|2[0-8]))")
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
_LABEL = r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?"
_HOST = rf"({_LABEL}\.){{0,4}}[a-zA-Z]([a-zA-Z0-9-]{{0,20}}[a-zA-Z0-9])?"
_PATH_CHARS = r"[a-zA-Z0-9._~!$&'()*+,;=:@-]"
# Bounded repetitions here would give large DFAs (they did blow up interegular's); URIs use plain stars.
_URI_HOST = r"[a-z0-9]+([.-][a-z0-9]+)*"
_URI_PATH = rf"(/{_PATH_CHARS}*)*"
_URI_QUERY = r"(\?[a-zA-Z0-9._~&=+-]*)?"

# ISO 8601 durations (RFC 3339 appendix A, with the elements isoduration also takes on their own: P1Y1D, PT1H1S):
# at least one element, and a T only before a time element.
_N = r"[0-9]{1,4}"
_DUR_DATE = rf"({_N}Y({_N}M)?({_N}D)?|{_N}M({_N}D)?|{_N}D)"
_DUR_TIME = rf"T({_N}H({_N}M)?({_N}S)?|{_N}M({_N}S)?|{_N}S)"
# Regexes that every dialect compiles (jsonschema checks `format: regex` with Python's re.compile): literals,
# escapes, `.`, simple classes and ranges, one quantifier per atom ({m} / {m,} only: {m,n} fails when m > n), groups
# one level deep, alternation, anchors at the ends. A subset: what it admits always compiles.
_RX_LIT = r"[a-zA-Z0-9 _:/,@#%&=<>!'~;-]"
_RX_ESC = r"\\[dDwWsSbB.*+?()\[\]{}|^$\\/-]"
_RX_CLASS = r"\[\^?(a-z|A-Z|0-9|[a-zA-Z0-9_ ]|\\[dws])+\]"
_RX_QUANT = r"([*+?]|\{[0-9]{1,2},?\})?"
_RX_PIECE = rf"({_RX_LIT}|{_RX_ESC}|\.|{_RX_CLASS}){_RX_QUANT}"
_RX_GROUP = rf"\((\?:)?({_RX_PIECE})+(\|({_RX_PIECE})+)*\){_RX_QUANT}"
_RX_BRANCH = rf"({_RX_PIECE}|{_RX_GROUP})*"

FORMAT_REGEXES = {
    "duration": rf"P({_DUR_DATE}({_DUR_TIME})?|{_DUR_TIME}|{_N}W)",
    "regex": rf"\^?{_RX_BRANCH}(\|{_RX_BRANCH})*\$?",
    "date": _DATE,
    "time": _TIME,
    "date-time": rf"{_DATE}T{_TIME}",
    "email": r"[a-zA-Z0-9._%+-]{1,40}@[a-zA-Z0-9-]{1,20}(\.[a-zA-Z0-9-]{1,20}){1,3}",
    "idn-email": r"[a-zA-Z0-9._%+-]{1,40}@[a-zA-Z0-9-]{1,20}(\.[a-zA-Z0-9-]{1,20}){1,3}",
    "uuid": r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    "ipv4": rf"({_OCTET}\.){{3}}{_OCTET}",
    "ipv6": rf"({_H16}:){{7}}{_H16}",
    "hostname": _HOST,
    "idn-hostname": _HOST,
    "uri": rf"https?://{_URI_HOST}{_URI_PATH}{_URI_QUERY}",
    "url": rf"https?://{_URI_HOST}{_URI_PATH}{_URI_QUERY}",
    "iri": rf"https?://{_URI_HOST}{_URI_PATH}",
    "uri-reference": rf"(https?://{_URI_HOST})?{_URI_PATH}",
    "json-pointer": r"(/([^~/]|~[01])*)*",
}

FORMAT_REGEXES["uri-template"] = FORMAT_REGEXES["uri"]  # a URI without expressions is a valid template

# Formats a validator may check: the JSON Schema spec's own, and whatever jsonschema checks here. One we have
# no regex for is refused: ignoring it could let through output that a validator with the optional format
# packages installed rejects. Other (custom) format names are annotations.
SPEC_FORMATS = frozenset({
    "date-time", "date", "time", "duration", "email", "idn-email", "hostname", "idn-hostname", "ipv4", "ipv6",
    "uri", "uri-reference", "iri", "iri-reference", "uuid", "uri-template", "json-pointer",
    "relative-json-pointer", "regex"})
CHECKED_FORMATS = frozenset(jsonschema.FormatChecker().checkers) | SPEC_FORMATS


def format_regex(name: str) -> str | None:
    """The regex for `name`, or None for a format no validator here checks (an annotation)."""
    return FORMAT_REGEXES.get(name)
