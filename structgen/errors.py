"""Errors a user can act on. Everything a bad constraint can raise derives from ConstraintError."""

from __future__ import annotations


class StructgenError(Exception):
    """Base of every structgen error."""


class ConstraintError(StructgenError, ValueError):
    """A constraint (schema, regex, choice list) cannot be compiled."""


class InvalidSchemaError(ConstraintError):
    """The schema is not valid JSON / not a JSON Schema (e.g. `type: 5`). `pointer` is a JSON pointer."""

    def __init__(self, message: str, pointer: str = ""):
        self.pointer = pointer
        super().__init__(f"{message} (at '{pointer or '#'}')")


class UnsupportedSchemaError(ConstraintError):
    """A keyword we cannot enforce. We refuse rather than ignore it and let invalid output through."""

    def __init__(self, keyword: str, pointer: str, detail: str = ""):
        self.keyword = keyword
        self.pointer = pointer
        msg = f"unsupported JSON Schema keyword '{keyword}' at '{pointer or '#'}'"
        super().__init__(msg + (f": {detail}" if detail else ""))


class InvalidRegexError(ConstraintError):
    """A regex that does not parse (or uses syntax outside the supported subset). `position` is 0-based."""

    def __init__(self, pattern: str, position: int | None, detail: str):
        self.pattern = pattern
        self.position = position
        where = f" at position {position}" if position is not None else ""
        super().__init__(f"invalid regex{where}: {detail} (pattern {pattern!r})")


class ConstraintTooComplexError(ConstraintError):
    """Compiling would exceed a configured limit (states, time). Raised instead of hanging."""

    def __init__(self, what: str, limit: float | int, setting: str = ""):
        self.what = what
        self.limit = limit
        hint = f"; raise {setting} to allow more" if setting else ""
        super().__init__(f"constraint too complex: {what} exceeded the limit of {limit}{hint}")


class CompileDeadlineError(ConstraintTooComplexError):
    """The request's deadline ended its compile before the server's own time limit would have.

    ran=True: the constraint compiled for `timeout_s` without finishing; remembered like a limit failure (a later
    request with no more time fails fast). ran=False: the deadline passed while the compile waited (for a worker, or
    for another request's compile of the same constraint); not remembered. Reported as DEADLINE_EXCEEDED.
    """

    def __init__(self, timeout_s: float, ran: bool = True):
        self.timeout_s = timeout_s
        self.ran = ran
        self.what, self.limit = "compile time before the request's deadline (s)", timeout_s
        if ran:
            msg = (f"the request's deadline passed while its constraint compiled ({timeout_s:.3f} s were left): "
                   f"raise the deadline, or Compile the constraint once ahead of the requests that use it")
        else:
            msg = ("the request's deadline passed while its constraint waited to compile (the compile workers were "
                   "busy): retry, or raise the deadline")
        ConstraintError.__init__(self, msg)


class CompileCrashedError(ConstraintError):
    """The compiler failed on this constraint in a way it should not (a bug, or its worker process died).
    Remembered like any compile failure so the same input cannot crash workers again and again."""


class CompileCancelledError(StructgenError):
    """The compile was stopped because every request waiting for it went away (never remembered)."""


class CompileQueueFullError(StructgenError):
    """Too many compiles are waiting (the server's whole queue, or one client's share of it): retry later."""


class InvalidGrammarError(ConstraintError):
    """A grammar (EBNF or Lark) that does not parse or breaks a rule of its syntax (an undefined or twice-defined
    rule, no start rule). `line` and `column` are 1-based; None where the error is about the grammar as a whole."""

    def __init__(self, detail: str, line: int | None = None, column: int | None = None):
        self.detail = detail
        self.line = line
        self.column = column
        where = f" at line {line}, column {column}" if line is not None else ""
        super().__init__(f"invalid grammar{where}: {detail}")


class UnsupportedGrammarError(ConstraintError):
    """A grammar we cannot enforce exactly: one that is not regular (`rules` names the recursive rules), or syntax
    outside the supported subset. Refused rather than approximated, so no output outside the grammar gets through."""

    def __init__(self, detail: str, rules: tuple[str, ...] = (), line: int | None = None,
                 column: int | None = None):
        self.detail = detail
        self.rules = tuple(rules)
        self.line = line
        self.column = column
        where = f" at line {line}, column {column}" if line is not None else ""
        super().__init__(f"unsupported grammar{where}: {detail}")
