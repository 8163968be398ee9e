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


def test_sampling_parameters_map_to_the_proto():
    req = build_request("x", frequency_penalty=0.5, presence_penalty=-0.5, repetition_penalty=1.25, min_p=0.25,
                        logit_bias={3: -100, 9: 1.5}, dry_multiplier=0.75, dry_base=2.0, dry_allowed_length=4,
                        dry_range=32, logprobs=True, top_logprobs=3, n=4)
    s = req.sampling
    assert (s.frequency_penalty, s.presence_penalty, s.repetition_penalty, s.min_p) == (0.5, -0.5, 1.25, 0.25)
    assert dict(s.logit_bias) == {3: -100.0, 9: 1.5}
    assert (s.dry_multiplier, s.dry_base, s.dry_allowed_length, s.dry_range) == (0.75, 2.0, 4, 32)
    assert s.logprobs and s.top_logprobs == 3 and s.n == 4
    unset = build_request("x").sampling
    # proto3 optionals whose 0 is not their default stay unset (the server fills 1.0 / 1.75 / 2)
    assert not any(unset.HasField(f) for f in ("repetition_penalty", "dry_base", "dry_allowed_length", "seed"))
    assert build_request("x", dry_allowed_length=0).sampling.HasField("dry_allowed_length")  # sent, refused there
    with pytest.raises(TypeError, match="mapping"):
        build_request("x", logit_bias=[(3, 1.0)])


def test_extract_takes_sampling_but_not_n_or_logprobs():
    from structgen.client.extraction import ExtractionTask
    from structgen.client.wire import extract_call

    task = ExtractionTask.of({"type": "object"})
    call = extract_call(task, "doc", 50, repetition_penalty=1.2, dry_multiplier=0.8, seed=1)
    assert call.request.sampling.dry_multiplier == pytest.approx(0.8) and call.request.max_tokens == 50
    for bad in (dict(n=2), dict(logprobs=True), dict(tempreature=0.5)):
        with pytest.raises(TypeError, match="extract does not take"):
            extract_call(task, "doc", None, **bad)


def test_extract_guards_against_loops_by_default_and_the_caller_can_turn_it_off():
    from structgen.client.extraction import EXTRACT_SAMPLING_DEFAULTS, ExtractionTask
    from structgen.client.wire import build_request, extract_call

    task = ExtractionTask.of({"type": "object"})
    assert EXTRACT_SAMPLING_DEFAULTS == {"dry_multiplier": 0.8}
    assert extract_call(task, "doc").request.sampling.dry_multiplier == pytest.approx(0.8)
    assert extract_call(task, "doc", dry_multiplier=0.0).request.sampling.dry_multiplier == 0.0
    # generate stays neutral
    assert build_request(prompt="x").sampling.dry_multiplier == 0.0


def test_affinity_key_is_what_requests_share_for_the_caches():
    from structgen.client.extraction import ExtractionTask
    from structgen.client.wire import affinity_key, compile_call, extract_call

    task = ExtractionTask.of({"type": "object", "properties": {"a": {"type": "string"}}})
    other = ExtractionTask.of({"type": "object", "properties": {"b": {"type": "string"}}})
    one, two = (affinity_key(extract_call(task, text).request) for text in ("doc one", "doc two"))
    assert one is not None and one == two  # same schema and instructions, different documents
    assert affinity_key(extract_call(other, "doc one").request) != one
    assert affinity_key(extract_call(ExtractionTask.of(task.schema, "dates as ISO"), "doc one").request) != one
    assert affinity_key(build_request("plain prompt")) is None  # nothing shared: spread
    assert affinity_key(build_request("a", system="be brief")) == affinity_key(build_request("b", system="be brief"))
    assert affinity_key(build_request("a", regex="[0-9]+")) != affinity_key(build_request("a", regex="[a-z]+"))
    assert affinity_key(compile_call(regex="[0-9]+").request) is not None
