"""The SDK's request building (structgen/client/wire.py): arguments -> GenerateRequest, misuse refused."""

from __future__ import annotations

import pytest

from structgen.client import build_request


def test_build_request_maps_arguments():
    req = build_request(messages=[{"role": "user", "content": "hi"}], system="be brief", regex="[a-z]+",
                        max_tokens=7, temperature=0.5, top_p=0.9, top_k=5, seed=3, stop="\n", request_id="r1")
    assert req.messages[0].content == "hi" and req.system == "be brief"
    assert req.constraint.WhichOneof("kind") == "regex" and req.max_tokens == 7 and req.HasField("max_tokens")
    assert req.sampling.seed == 3 and req.sampling.HasField("seed") and list(req.stop) == ["\n"]
    assert not build_request("x").HasField("max_tokens")  # unset stays unset (server default), 0 is an error
    assert build_request("x", json_schema={"type": "string"}).constraint.json_schema == '{"type": "string"}'


@pytest.mark.parametrize("kwargs, match", [
    (dict(), "exactly one of prompt"),
    (dict(prompt="x", messages=[]), "exactly one of prompt"),
    (dict(prompt="x", regex="a", choices=["a"]), "at most one constraint"),
])
def test_build_request_rejects_misuse(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_request(**kwargs)


def test_choices_must_be_a_list():
    with pytest.raises(TypeError):
        build_request("x", choices="yes")
