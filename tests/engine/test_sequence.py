from concurrent.futures import Future

from structgen.engine.requests import GenerateRequest, SamplingParams
from structgen.engine.sequence import Sequence, SequenceStatus


def test_token_accounting():
    s = Sequence(GenerateRequest("a", [1, 2, 3], SamplingParams(max_tokens=5)))
    assert s.status is SequenceStatus.WAITING and s.num_uncomputed_tokens == 3
    s.num_computed_tokens = 3
    s.append_tokens([9, 8])
    assert s.output_token_ids == [9, 8] and s.num_output_tokens == 2 and s.num_uncomputed_tokens == 2
    assert s.last_token == 8 and s.prompt_len == 3
    s.finish("length")
    assert s.is_finished and s.finish_reason == "length" and s.finish_time is not None


def test_constraint_pending_until_compiled_or_failed():
    s = Sequence(GenerateRequest("a", [1]))
    assert not s.constraint_pending
    s.compile_future = Future()
    assert s.constraint_pending
    s.cursor = object()
    assert not s.constraint_pending
    t = Sequence(GenerateRequest("b", [1]))
    t.compile_future = Future()
    t.error = "bad schema"
    assert not t.constraint_pending
