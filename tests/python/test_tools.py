"""Tool calling and structured output end to end, with the official openai client
against a real `thaw serve` (SmolLM2-135M): constrained outputs must always parse and
validate against their schema."""

import json
import random
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import openai
import pytest

from conftest import start_server, stop_server


@pytest.fixture(scope="module")
def client():
    """Own server: tool prompts with several tools need more than the shared 512-token
    context (a prompt of ~480 tokens would leave no room for the call)."""
    s = start_server(["--max-running", "4"], ctx_size=2048)
    yield openai.OpenAI(base_url=s.base_url, api_key="unused", max_retries=0, timeout=300)
    assert stop_server(s) == 0

WORDS = ["city", "count", "mode", "tags", "limit", "query", "user", "options", "price", "active"]


def gen_schema(rng, depth=0):
    """A random object schema: nested objects, enums, arrays, bounded numbers,
    required and optional fields."""
    props = {}
    for name in rng.sample(WORDS, rng.randint(1, 3 if depth else 4)):
        kind = rng.choice(["string", "enum", "integer", "number", "boolean", "array", "object"])
        if kind == "object" and depth >= 1:
            kind = "string"
        if kind == "string":
            s = {"type": "string"}
            if rng.random() < 0.7:
                s["maxLength"] = rng.randint(3, 20)
        elif kind == "enum":
            s = {"type": "string", "enum": rng.sample(["red", "green", "blue", "fast", "slow", "none"], 3)}
        elif kind == "integer":
            lo = rng.randint(-50, 50)
            s = {"type": "integer", "minimum": lo, "maximum": lo + rng.randint(1, 100)}
        elif kind == "number":
            s = {"type": "number", "minimum": 0, "maximum": rng.choice([1, 10, 1000])}
        elif kind == "boolean":
            s = {"type": "boolean"}
        elif kind == "array":
            item = rng.choice([{"type": "integer", "minimum": 0, "maximum": 9},
                               {"type": "string", "enum": ["a", "b", "c"]}])
            s = {"type": "array", "items": item, "maxItems": rng.randint(1, 4)}
            if rng.random() < 0.5:
                s["minItems"] = 1
        else:
            s = gen_schema(rng, depth + 1)
        props[name] = s
    names = list(props)
    required = [n for n in names if rng.random() < 0.6] or names[:1]
    return {"type": "object", "properties": props, "required": required}


def gen_request(i):
    rng = random.Random(1000 + i)
    n_tools = rng.randint(1, 3)
    tools = []
    for k in range(n_tools):
        tools.append({
            "type": "function",
            "function": {
                "name": f"tool_{i}_{k}",
                "description": f"Tool number {k} of request {i}.",
                "parameters": gen_schema(rng),
            },
        })
    return tools


def validate_call(tools, call):
    by_name = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    assert call.type == "function"
    assert call.id
    assert call.function.name in by_name, call.function.name
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, by_name[call.function.name])
    return args


def test_fifty_required_tool_calls_validate(client):
    def one(i):
        tools = gen_request(i)
        parallel = i % 2 == 0
        r = client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": f"Please use a tool for task {i}."}],
            tools=tools,
            tool_choice="required",
            # Half the requests leave parallel calls allowed (the default): a small
            # model may then repeat its call, and every call must still be complete.
            **({} if parallel else {"parallel_tool_calls": False}),
            temperature=0,
            max_tokens=200,
        )
        ch = r.choices[0]
        assert ch.finish_reason == "tool_calls", (i, ch)
        assert ch.message.tool_calls, (i, ch)
        assert parallel or len(ch.message.tool_calls) == 1, (i, ch)
        for call in ch.message.tool_calls:
            validate_call(tools, call)
        return i

    with ThreadPoolExecutor(2) as ex:
        done = list(ex.map(one, range(50)))
    assert len(done) == 50


def test_named_tool_choice_and_streamed_calls(client):
    tools = gen_request(8)
    name = tools[-1]["function"]["name"]
    stream = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Call the tool."}],
        tools=tools,
        tool_choice={"type": "function", "function": {"name": name}},
        temperature=0,
        max_tokens=200,
        stream=True,
    )
    calls, finish, content = {}, None, ""
    for chunk in stream:
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        content += d.content or ""
        for tc in d.tool_calls or []:
            c = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
            if tc.id:
                assert c["id"] is None, "id sent twice"
                c["id"] = tc.id
            if tc.function and tc.function.name:
                c["name"] = tc.function.name
            if tc.function and tc.function.arguments:
                c["arguments"] += tc.function.arguments
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert content.strip() == ""
    assert list(calls) == [0]
    assert calls[0]["name"] == name and calls[0]["id"]
    jsonschema.validate(json.loads(calls[0]["arguments"]), tools[-1]["function"]["parameters"])


def test_round_trip_tool_result_then_text(client):
    tools = [{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 30},
                               "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                "required": ["city"],
            },
        },
    }]
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = client.chat.completions.create(
        model="smollm2", messages=messages, tools=tools, tool_choice="required",
        parallel_tool_calls=False, temperature=0, max_tokens=100,
    )
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls"
    call = msg.tool_calls[0]
    validate_call(tools, call)
    messages.append({"role": "assistant", "content": None, "tool_calls": [
        {"id": call.id, "type": "function",
         "function": {"name": call.function.name, "arguments": call.function.arguments}}]})
    messages.append({"role": "tool", "tool_call_id": call.id,
                     "content": json.dumps({"temperature": 21, "sky": "sunny"})})
    r2 = client.chat.completions.create(
        model="smollm2", messages=messages, tools=tools, tool_choice="none",
        temperature=0, max_tokens=40,
    )
    m2 = r2.choices[0].message
    assert not m2.tool_calls
    assert m2.content and m2.content.strip()
    # The tool result reached the prompt: it is longer than the first request's.
    assert r2.usage.prompt_tokens > r.usage.prompt_tokens + 10


def test_auto_tool_choice_calls_are_valid_when_made(client):
    tools = gen_request(3)
    for prompt in ["Hi! How are you?", "Use the tool now."]:
        r = client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": prompt}],
            tools=tools, parallel_tool_calls=False, temperature=0, max_tokens=120,
        )
        ch = r.choices[0]
        if ch.message.tool_calls:
            assert ch.finish_reason == "tool_calls"
            for c in ch.message.tool_calls:
                validate_call(tools, c)
        else:
            assert ch.message.content is not None


def test_response_format_json_schema_stream_and_not(client):
    for i in range(10):
        schema = gen_schema(random.Random(500 + i))
        kw = dict(
            model="smollm2",
            messages=[{"role": "user", "content": f"Describe item {i} as JSON."}],
            response_format={"type": "json_schema",
                             "json_schema": {"name": f"item{i}", "schema": schema, "strict": True}},
            temperature=0,
            max_tokens=200,
        )
        r = client.chat.completions.create(**kw)
        assert r.choices[0].finish_reason == "stop", r.choices[0]
        whole = r.choices[0].message.content
        jsonschema.validate(json.loads(whole), schema)
        text, finish = "", None
        for chunk in client.chat.completions.create(stream=True, **kw):
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
        assert finish == "stop"
        jsonschema.validate(json.loads(text), schema)
        assert text == whole  # greedy: the same answer either way


def test_json_object(client):
    r = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "A JSON object about a cat."}],
        response_format={"type": "json_object"}, temperature=0, max_tokens=150,
    )
    # Closed before max_tokens, however much the model wanted to say.
    assert r.choices[0].finish_reason == "stop", r.choices[0]
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_tight_max_tokens_still_close_valid(client):
    """A budget barely larger than the shortest valid answer: the output is wrapped
    up in time, sampled or greedy, streamed or not."""
    schema = {
        "type": "object",
        "properties": {
            "story": {"type": "string"},
            "scores": {"type": "array", "items": {"type": "number"}},
            "author": {"type": "object", "properties": {"name": {"type": "string"},
                                                         "age": {"type": "integer"}},
                       "required": ["name", "age"]},
        },
        "required": ["story", "scores", "author"],
    }
    for i, max_tokens in enumerate([40, 50, 64, 90]):
        kw = dict(
            model="smollm2",
            messages=[{"role": "user", "content": "Write a long story as JSON."}],
            response_format={"type": "json_schema",
                             "json_schema": {"name": "s", "schema": schema}},
            temperature=0.9 if i % 2 else 0, seed=i, max_tokens=max_tokens,
        )
        r = client.chat.completions.create(**kw)
        assert r.choices[0].finish_reason == "stop", (max_tokens, r.choices[0])
        assert r.usage.completion_tokens <= max_tokens
        jsonschema.validate(json.loads(r.choices[0].message.content), schema)
        if max_tokens < 50:
            continue  # the call's own markup takes ~45 tokens: no room for a call
        tools = [{"type": "function", "function": {"name": "save", "parameters": schema}}]
        text_calls = {}
        for chunk in client.chat.completions.create(
                stream=True, tools=tools, tool_choice="required",
                **{k: v for k, v in kw.items() if k != "response_format"}):
            if chunk.choices:
                for tc in chunk.choices[0].delta.tool_calls or []:
                    text_calls[tc.index] = text_calls.get(tc.index, "") + (tc.function.arguments or "")
                finish = chunk.choices[0].finish_reason or None
        assert finish == "tool_calls", max_tokens
        for args in text_calls.values():
            jsonschema.validate(json.loads(args), schema)


NUMBER_SCHEMAS = [
    # A bounded number with a required property after it, exclusive bounds that "0"
    # alone does not meet, a recursive tree and an array with a minimum length.
    {"type": "object", "properties": {"p": {"type": "number", "minimum": 0.5, "maximum": 0.9},
                                      "q": {"type": "string"}}, "required": ["p", "q"]},
    {"type": "object", "properties": {"score": {"type": "number", "exclusiveMinimum": 0,
                                                "exclusiveMaximum": 1},
                                      "count": {"type": "integer", "minimum": 10, "maximum": 20}},
     "required": ["score", "count"]},
    {"$ref": "#/$defs/n", "$defs": {"n": {"type": "object", "properties": {
        "v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/n"}}},
        "required": ["v", "kids"]}}},
    {"type": "object", "properties": {"xs": {"type": "array", "items": {"type": "number"},
                                             "minItems": 3}, "name": {"type": "string"}},
     "required": ["xs", "name"]},
]


def test_numbers_close_within_max_tokens(client):
    """Numbers end when the budget runs short: a wrapped-up output moves on to the
    next property instead of adding digits until the limit cuts the JSON."""
    for k, schema in enumerate(NUMBER_SCHEMAS):
        for max_tokens in [24, 60, 150]:
            r = client.chat.completions.create(
                model="smollm2",
                messages=[{"role": "user", "content": "Give a very precise number and a long story."}],
                response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
                temperature=0, max_tokens=max_tokens,
            )
            text = r.choices[0].message.content
            jsonschema.validate(json.loads(text), schema)
            assert r.usage.completion_tokens <= max_tokens, (k, max_tokens, text)


def test_unsupported_keyword_is_400_naming_it(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "x"}],
            response_format={"type": "json_schema", "json_schema": {
                "name": "s", "schema": {"type": "object", "if": {"required": ["a"]}, "then": {}}}},
        )
    assert "`if`" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "x"}],
            tools=[{"type": "function", "function": {"name": "f", "parameters": {
                "type": "object", "properties": {"a": {"type": "string", "contentEncoding": "base64", "if": {}}}}}}],
            tool_choice="required",
        )
    assert e.value.body["param"] == "tools[0].function.parameters"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "x"}],
            tools=[{"type": "function", "function": {"name": "f"}}],
            tool_choice={"type": "function", "function": {"name": "g"}},
        )
    assert e.value.body["param"] == "tool_choice"
