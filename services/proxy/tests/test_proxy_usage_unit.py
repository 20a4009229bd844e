"""Reading usage out of answers and streams: the rules, without any server."""

from __future__ import annotations

import orjson

from aqueduct_proxy.domain.usage import StreamTally, usage_from_body


def _event(payload: dict, name: str | None = None) -> bytes:
    prefix = f"event: {name}\n".encode() if name else b""
    return prefix + b"data: " + orjson.dumps(payload) + b"\n\n"


def test_whole_answers_in_both_namings():
    chat = {
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 4}}
    }
    assert (u := usage_from_body(chat)) and (u.input_tokens, u.output_tokens, u.cached_tokens) == (7, 3, 4)
    responses = {
        "usage": {"input_tokens": 5, "output_tokens": 2, "input_tokens_details": {"cached_tokens": 1}}
    }
    assert (u := usage_from_body(responses)) and (u.input_tokens, u.output_tokens, u.cached_tokens) == (
        5,
        2,
        1,
    )
    assert usage_from_body({"data": []}) is None and usage_from_body([1]) is None


def test_usage_chunk_is_kept_but_hidden_unless_asked_for():
    usage_chunk = _event({"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3}})
    for wants, forwarded in ((False, False), (True, True)):
        tally = StreamTally(client_wants_usage=wants)
        assert tally.observe(_event({"choices": [{"delta": {"role": "assistant", "content": ""}}]}))
        for word in ("a", "b", "c"):
            assert tally.observe(_event({"choices": [{"delta": {"content": word}}], "usage": None}))
        assert tally.observe(usage_chunk) is forwarded
        assert tally.observe(b"data: [DONE]\n\n")
        assert tally.usage is not None and (tally.usage.input_tokens, tally.usage.output_tokens) == (2, 3)
        assert tally.chunks == 3  # the empty role chunk is no output


def test_responses_stream_usage_from_the_completed_event():
    tally = StreamTally(client_wants_usage=False)
    assert tally.observe(
        _event({"type": "response.output_text.delta", "delta": "hi"}, "response.output_text.delta")
    )
    done = {"type": "response.completed", "response": {"usage": {"input_tokens": 9, "output_tokens": 1}}}
    assert tally.observe(_event(done, "response.completed"))  # part of the protocol: always forwarded
    assert tally.usage is not None and (tally.usage.input_tokens, tally.usage.output_tokens) == (9, 1)
    assert tally.chunks == 1


def test_absurd_upstream_counts_are_published_within_bounds():
    """An upstream reporting more tokens than can be priced without overflow is counted at the bound, a
    negative or non-integer count as none: accounting never receives an event it must refuse for that."""
    from aqueduct_libs.bounds import MAX_TOKENS

    huge = {
        "usage": {
            "prompt_tokens": 10**30,
            "completion_tokens": -5,
            "prompt_tokens_details": {"cached_tokens": 2.5},
        }
    }
    u = usage_from_body(huge)
    assert u is not None and (u.input_tokens, u.output_tokens, u.cached_tokens) == (MAX_TOKENS, 0, 2)
    tally = StreamTally(client_wants_usage=True)
    # Beyond 64 bits, as an upstream may write it (JSON parsers read it as a float).
    tally.observe(
        b'data: {"choices": [], "usage": {"prompt_tokens": true, "completion_tokens": 1'
        + b"0" * 30
        + b"}}\n\n"
    )
    assert tally.usage is not None and (tally.usage.input_tokens, tally.usage.output_tokens) == (
        0,
        MAX_TOKENS,
    )
