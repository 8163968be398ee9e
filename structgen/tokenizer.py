"""A thin, immutable view of a Hugging Face `tokenizer.json` folder: ids, special tokens, chat template.

Everything that needs "the tokenizer" (the FSM compiler, the engine, the server) takes this class, so the
special-token and fingerprint rules live in one place.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Sequence

from tokenizers import Tokenizer as _HFTokenizer


class Tokenizer:
    """Wraps `tokenizers.Tokenizer` with the metadata of `tokenizer_config.json`.

    Attributes:
        vocab_size: number of token ids (max id + 1, added tokens included).
        eos_token_ids: ids that end generation (EOS is allowed by an FSM exactly in final states).
        special_token_ids: added/special tokens that constraints never allow (EOS aside).
        fingerprint: sha256 over the tokenizer's definition; part of every compile-cache key.
    """

    def __init__(self, hf: _HFTokenizer, config: dict | None = None, chat_template: str | None = None,
                 source: str = "<memory>"):
        self._hf = hf
        self.config = dict(config or {})
        self.source = source
        self.chat_template = chat_template or self.config.get("chat_template")
        vocab = hf.get_vocab(with_added_tokens=True)
        self.vocab_size = max(vocab.values()) + 1
        added = hf.get_added_tokens_decoder()
        self.special_token_ids = frozenset(i for i, t in added.items() if t.special)
        eos = self._token_name(self.config.get("eos_token"))
        if eos is None or eos not in vocab:
            raise ValueError(f"tokenizer at {source} defines no usable eos_token")
        self.eos_token = eos
        self.eos_token_ids = frozenset([vocab[eos]])
        self.bos_token = self._token_name(self.config.get("bos_token"))
        self.pad_token_id = vocab.get(self._token_name(self.config.get("pad_token")) or "", next(iter(self.eos_token_ids)))
        digest = hashlib.sha256(hf.to_str().encode())
        digest.update(json.dumps(sorted(self.eos_token_ids)).encode())
        self.fingerprint = digest.hexdigest()[:32]

    @staticmethod
    def _token_name(value) -> str | None:
        if isinstance(value, dict):  # older configs store AddedToken dicts
            return value.get("content")
        return value

    @classmethod
    def from_dir(cls, folder: str | Path) -> "Tokenizer":
        folder = Path(folder)
        tok_file = folder / "tokenizer.json"
        if not tok_file.is_file():
            raise FileNotFoundError(f"no tokenizer.json in {folder}")
        config = {}
        if (folder / "tokenizer_config.json").is_file():
            config = json.loads((folder / "tokenizer_config.json").read_text())
        template = None
        if (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text()
        return cls(_HFTokenizer.from_file(str(tok_file)), config, template, source=str(folder))

    @property
    def hf(self) -> _HFTokenizer:
        """The underlying `tokenizers.Tokenizer` (read-only use)."""
        return self._hf

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, with no special tokens added."""
        return self._hf.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self._hf.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def id_to_token(self, i: int) -> str | None:
        return self._hf.id_to_token(i)

    @property
    def template_knows_tools(self) -> bool:
        """Whether the chat template renders a `tools` list itself (else the server describes tools in text)."""
        return bool(self.chat_template) and "tools" in self.chat_template

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True,
                            tools: list[dict] | None = None) -> str:
        """Render chat messages ([{role, content}]) with the model's template, as the model was trained.
        `tools` (OpenAI function definitions) go to templates that render them (template_knows_tools)."""
        if not self.chat_template:
            # A plain fallback for base models: role-tagged lines.
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
            return text + ("assistant: " if add_generation_prompt else "")
        import jinja2

        env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
        return env.from_string(self.chat_template).render(
            messages=messages, add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "", eos_token=self.eos_token, tools=tools,
        )

    def __repr__(self) -> str:
        return f"Tokenizer(source={self.source!r}, vocab_size={self.vocab_size}, fingerprint={self.fingerprint[:8]})"


@functools.lru_cache(maxsize=1)
def default_tokenizer() -> Tokenizer:
    """SmolLM2-135M-Instruct's tokenizer (converted once from the embedded GGUF, then cached on disk)."""
    from .assets import prepare_default_tokenizer

    return Tokenizer.from_dir(prepare_default_tokenizer())
