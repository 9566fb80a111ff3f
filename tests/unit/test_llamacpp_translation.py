"""The Ollama <-> llama-server mapping tables, without any I/O."""

from __future__ import annotations

from typing import Any

import pytest

from sollol_cli.backends import translate
from sollol_cli.backends.base import StreamBroken, aggregate


def fixed_clock() -> int:
    return 5_000_000_000


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"num_predict": 16}, {"n_predict": 16}),
        ({"num_predict": -2}, {"n_predict": -1}),
        ({"temperature": 0, "top_k": 1, "top_p": 0.9, "min_p": 0.1, "seed": 7}, None),
        ({"stop": "\n"}, {"stop": ["\n"]}),
        ({"stop": ["a", "b"]}, {"stop": ["a", "b"]}),
        ({"repeat_penalty": 1.1, "presence_penalty": 0.5, "frequency_penalty": 0.2}, None),
        ({"num_keep": 4, "typical_p": 0.8, "repeat_last_n": 32}, {"n_keep": 4, "typical_p": 0.8, "repeat_last_n": 32}),
        ({"mirostat": 2, "mirostat_tau": 5.0, "mirostat_eta": 0.1}, None),
        ({"num_ctx": 8192, "num_gpu": 99, "num_thread": 8, "use_mmap": True}, {}),
        ({"no_such_option": 1, "temperature": None}, {}),
    ],
)
def test_options_map_to_llama_server_fields(options: dict[str, Any], expected: dict[str, Any] | None) -> None:
    assert translate.map_options(options) == (options if expected is None else expected)


def test_options_that_are_not_a_dict_are_ignored() -> None:
    assert translate.map_options(None) == {}
    assert translate.map_options(["temperature"]) == {}


def test_startup_only_options_are_never_forwarded() -> None:
    assert not translate.STARTUP_ONLY_OPTIONS & set(translate.OPTION_FIELDS)


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("json", {"json_schema": {}}),
        ({"type": "object", "properties": {"a": {"type": "string"}}},
         {"json_schema": {"type": "object", "properties": {"a": {"type": "string"}}}}),
        ("", {}),
        (None, {}),
    ],
)  # fmt: skip
def test_format_becomes_a_json_schema(fmt: Any, expected: dict[str, Any]) -> None:
    assert translate.format_fields(fmt) == expected


def test_generate_body_becomes_a_streaming_completion() -> None:
    body = {"model": "tiny", "prompt": "ignored", "options": {"num_predict": 8, "seed": 1}, "format": "json"}
    assert translate.completion_request(body, "Hello") == {
        "stream": True,
        "n_predict": 8,
        "seed": 1,
        "json_schema": {},
        "prompt": "Hello",
    }


def test_generate_with_suffix_becomes_an_infill() -> None:
    request = translate.completion_request({"prompt": "def f(", "suffix": "    return x"}, "def f(")
    assert request == {"stream": True, "input_prefix": "def f(", "input_suffix": "    return x", "prompt": ""}


def test_template_messages_put_the_system_prompt_first() -> None:
    assert translate.template_messages({"system": "Be short.", "prompt": "Hi"}) == [
        {"role": "system", "content": "Be short."},
        {"role": "user", "content": "Hi"},
    ]
    assert translate.template_messages({"prompt": "Hi"}) == [{"role": "user", "content": "Hi"}]


def test_chat_body_becomes_a_streaming_chat_completion() -> None:
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    body = {
        "model": "tiny",
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "look", "images": ["aGVsbG8="]},
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "add", "arguments": {"a": 1}}}]},
            {"role": "tool", "content": "2", "tool_name": "add"},
            {"role": "assistant", "content": "2", "thinking": "easy"},
        ],
        "tools": tools,
        "options": {"temperature": 0, "num_ctx": 4096},
        "format": {"type": "object"},
        "think": False,
        "keep_alive": "5m",
    }
    assert translate.chat_request(body) == {
        "model": "tiny",
        "messages": [
            {"role": "system", "content": "sys"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}},
                ],
            },
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"type": "function", "function": {"name": "add", "arguments": {"a": 1}}}],
            },
            {"role": "tool", "content": "2", "name": "add"},
            {"role": "assistant", "content": "2", "reasoning_content": "easy"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0,
        "json_schema": {"type": "object"},
        "chat_template_kwargs": {"enable_thinking": False},
        "tools": tools,
    }


@pytest.mark.parametrize(
    ("think", "expected"),
    [(True, {"chat_template_kwargs": {"enable_thinking": True}}), ("high", {"reasoning_effort": "high"}), (None, {})],
)
def test_think_switches(think: Any, expected: dict[str, Any]) -> None:
    assert translate.think_fields(think) == expected


@pytest.mark.parametrize(
    ("stop_type", "finish_reason", "reason"),
    [
        ("limit", None, "length"),
        ("eos", None, "stop"),
        ("word", None, "stop"),
        ("none", None, "stop"),
        (None, "length", "length"),
        (None, "stop", "stop"),
        (None, "tool_calls", "stop"),
    ],
)
def test_done_reason(stop_type: Any, finish_reason: Any, reason: str) -> None:
    assert translate.done_reason(stop_type=stop_type, finish_reason=finish_reason) == reason


def test_final_metrics_convert_milliseconds_to_integer_nanoseconds() -> None:
    timings = {"prompt_n": 5, "prompt_ms": 1.5, "predicted_n": 8, "predicted_ms": 12.25, "cache_n": 0}
    assert translate.final_metrics(timings, None, 99) == {
        "total_duration": 99,
        "prompt_eval_count": 5,
        "prompt_eval_duration": 1_500_000,
        "eval_count": 8,
        "eval_duration": 12_250_000,
    }


def test_final_metrics_omit_zeros_and_fall_back_to_usage() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 0}
    assert translate.final_metrics(None, usage, 10) == {"total_duration": 10, "prompt_eval_count": 3}


def test_completion_events_become_generate_chunks() -> None:
    framing = translate.GenerateFraming(model="tiny", clock=fixed_clock)
    first = framing.feed({"index": 0, "content": "Hel", "tokens": [1], "stop": False, "tokens_predicted": 1})
    held_back = framing.feed({"content": "", "stop": False})
    final = framing.feed(
        {
            "content": "",
            "stop": True,
            "stop_type": "limit",
            "timings": {"prompt_n": 4, "prompt_ms": 2.0, "predicted_n": 1, "predicted_ms": 0.5},
        }
    )
    assert held_back == []
    assert [{k: v for k, v in c.items() if k != "created_at"} for c in first + final] == [
        {"model": "tiny", "response": "Hel", "done": False},
        {
            "model": "tiny",
            "response": "",
            "done": True,
            "done_reason": "length",
            "total_duration": 5_000_000_000,
            "prompt_eval_count": 4,
            "prompt_eval_duration": 2_000_000,
            "eval_count": 1,
            "eval_duration": 500_000,
        },
    ]
    assert framing.finished
    assert first[0]["created_at"].endswith("Z") and "." in first[0]["created_at"]


def _delta(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "object": "chat.completion.chunk"}


def test_chat_events_become_chat_chunks_with_whole_tool_calls() -> None:
    framing = translate.ChatFraming(model="tiny", clock=fixed_clock)
    events = [
        _delta({"role": "assistant", "content": None}),
        _delta({"reasoning_content": "hmm"}),
        _delta({"content": "Sure"}),
        _delta(
            {"tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "add", "arguments": ""}}]}
        ),
        _delta({"tool_calls": [{"index": 0, "function": {"arguments": '{"a": '}}]}),
        _delta({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
        _delta({}, finish="tool_calls"),
        {
            "choices": [],
            "usage": {"prompt_tokens": 9, "completion_tokens": 6},
            "timings": {"prompt_n": 9, "prompt_ms": 3.0, "predicted_n": 6, "predicted_ms": 4.0},
        },
    ]
    chunks = [chunk for event in events for chunk in framing.feed(event)]
    assert framing.started_finishing
    chunks += framing.finish()
    assert [{k: v for k, v in c.items() if k != "created_at"} for c in chunks] == [
        {"model": "tiny", "message": {"role": "assistant", "content": "", "thinking": "hmm"}, "done": False},
        {"model": "tiny", "message": {"role": "assistant", "content": "Sure"}, "done": False},
        {
            "model": "tiny",
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"index": 0, "name": "add", "arguments": {"a": 1}}, "id": "c1"}],
            },
            "done": False,
        },
        {
            "model": "tiny",
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "total_duration": 5_000_000_000,
            "prompt_eval_count": 9,
            "prompt_eval_duration": 3_000_000,
            "eval_count": 6,
            "eval_duration": 4_000_000,
        },
    ]


def test_chat_tool_call_with_broken_arguments_is_an_error() -> None:
    framing = translate.ChatFraming(model="tiny", clock=fixed_clock)
    framing.feed(_delta({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{oops"}}]}, "tool_calls"))
    with pytest.raises(ValueError, match="tool call 'f'"):
        framing.finish()


def test_embeddings_are_reordered_and_shortened() -> None:
    openai = {
        "data": [{"index": 1, "embedding": [0.0, 3.0, 4.0]}, {"index": 0, "embedding": [1.0, 0.0, 0.0]}],
        "usage": {"prompt_tokens": 4},
    }
    assert translate.embed_response({"model": "e", "dimensions": 2}, openai, 7) == {
        "model": "e",
        "embeddings": [[1.0, 0.0], [0.0, 1.0]],
        "total_duration": 7,
        "prompt_eval_count": 4,
    }
    assert translate.embed_input({"input": "a"}) == ["a"]
    assert translate.embed_input({"input": ["a", "b"]}) == ["a", "b"]


@pytest.mark.parametrize(
    ("count", "text"), [(8_030_261_312, "8.0B"), (67_000_000, "67.00M"), (12_345, "12.35K"), (0, None), ("x", None)]
)
def test_parameter_sizes_read_like_ollamas(count: Any, text: str | None) -> None:
    assert translate.human_parameters(count) == text


def test_aggregate_generate_chunks() -> None:
    chunks = [
        {"model": "m", "created_at": "t1", "response": "Hel", "done": False},
        {"model": "m", "created_at": "t2", "response": "lo", "done": False},
        {"model": "m", "created_at": "t3", "response": "", "done": True, "done_reason": "stop", "eval_count": 2,
         "total_duration": 10, "context": [1, 2]},
    ]  # fmt: skip
    assert aggregate(chunks) == {
        "model": "m",
        "created_at": "t3",
        "response": "Hello",
        "done": True,
        "done_reason": "stop",
        "context": [1, 2],
        "total_duration": 10,
        "eval_count": 2,
    }


def test_aggregate_chat_chunks_keeps_thinking_and_tool_calls() -> None:
    call = {"function": {"name": "add", "arguments": {"a": 1}}}
    chunks = [
        {"model": "m", "created_at": "t1", "message": {"role": "assistant", "content": "", "thinking": "hm"}, "done": False},
        {"model": "m", "created_at": "t2", "message": {"role": "assistant", "content": "Hi"}, "done": False},
        {"model": "m", "created_at": "t3", "message": {"role": "assistant", "content": "", "tool_calls": [call]}, "done": False},
        {"model": "m", "created_at": "t4", "message": {"role": "assistant", "content": ""}, "done": True,
         "done_reason": "stop", "prompt_eval_count": 3},
    ]  # fmt: skip
    assert aggregate(chunks) == {
        "model": "m",
        "created_at": "t4",
        "message": {"role": "assistant", "content": "Hi", "thinking": "hm", "tool_calls": [call]},
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": 3,
    }


def test_aggregate_without_a_final_chunk_is_a_broken_stream() -> None:
    with pytest.raises(StreamBroken, match="final chunk"):
        aggregate([{"model": "m", "response": "x", "done": False}])
