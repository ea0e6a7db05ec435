"""End-to-end tests of `thaw serve` through the official `openai` Python package."""

import concurrent.futures
import json
import time
import urllib.request

import openai
import pytest

from conftest import MODEL


def chat(client, content, **kw):
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": content}], **kw
    )


def test_models(client):
    ids = [m.id for m in client.models.list().data]
    assert ids == [MODEL]


def test_chat_and_usage(client):
    r = chat(client, "What is 2 + 2?", temperature=0, max_tokens=10)
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    c = r.choices[0]
    assert c.message.role == "assistant" and c.message.content
    assert c.finish_reason in ("stop", "length")
    u = r.usage
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert 1 <= u.completion_tokens <= 10
    assert (c.finish_reason == "length") == (u.completion_tokens == 10)
    # Identical prompt: the prefix cache holds all but the last two prompt tokens (a
    # tail of two or more keeps the prompt arithmetic, so the answer is identical).
    r2 = chat(client, "What is 2 + 2?", temperature=0, max_tokens=10)
    assert r2.choices[0].message.content == c.message.content
    assert r2.usage.prompt_tokens_details.cached_tokens == u.prompt_tokens - 2


def test_content_parts(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": [{"type": "text", "text": "What is 2 + 2?"}]}],
        temperature=0,
        max_tokens=10,
    )
    r2 = chat(client, "What is 2 + 2?", temperature=0, max_tokens=10)
    assert r.choices[0].message.content == r2.choices[0].message.content


def test_completions_and_stop(client):
    full = client.completions.create(
        model=MODEL, prompt="The days of the week are Monday,", temperature=0, max_tokens=24
    )
    assert full.object == "text_completion"
    text = full.choices[0].text
    assert len(text) > 12
    stop = text[8:11]
    cut = client.completions.create(
        model=MODEL, prompt="The days of the week are Monday,", temperature=0, max_tokens=24, stop=[stop]
    )
    assert cut.choices[0].text == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_seeds(client):
    texts = [
        chat(client, "Write a word.", temperature=1.0, seed=s, max_tokens=12).choices[0].message.content
        for s in (7, 7, 8, 9, 10)
    ]
    assert texts[0] == texts[1]
    assert len(set(texts[1:])) > 1


def test_several_choices(client):
    # n choices: choice i is the single request with seed + i, streamed the same.
    many = chat(client, "Write a word.", temperature=1.0, seed=21, max_tokens=8, n=3)
    assert [c.index for c in many.choices] == [0, 1, 2]
    for c in many.choices:
        one = chat(client, "Write a word.", temperature=1.0, seed=21 + c.index, max_tokens=8)
        assert c.message.content == one.choices[0].message.content
    stream = chat(client, "Write a word.", temperature=1.0, seed=21, max_tokens=8, n=3,
                  stream=True, stream_options={"include_usage": True})
    texts = ["", "", ""]
    for chunk in stream:
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
    assert texts == [c.message.content for c in many.choices]
    assert chunk.usage.completion_tokens == many.usage.completion_tokens
    r = client.completions.create(model=MODEL, prompt=["One, two,", "A, B,"], max_tokens=4,
                                  temperature=0, n=2)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert r.choices[0].text == r.choices[1].text and r.choices[2].text == r.choices[3].text


def test_streaming_with_usage(client):
    whole = chat(client, "Say hello.", temperature=0, max_tokens=12)
    stream = chat(
        client, "Say hello.", temperature=0, max_tokens=12, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_errors(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, "x", temperature="hot")
    assert e.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, "word " * 700)
    assert e.value.code == "context_length_exceeded"


def test_eight_concurrent_streams(client):
    def one(i):
        s = chat(client, f"Count to {i + 3}.", temperature=0, max_tokens=16, stream=True,
                 stream_options={"include_usage": True})
        chunks = list(s)
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks[-1].usage

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(one, range(8)))
    for i, (text, usage) in enumerate(results):
        # The same answers as one at a time.
        alone = chat(client, f"Count to {i + 3}.", temperature=0, max_tokens=16)
        assert text == alone.choices[0].message.content
        assert usage.completion_tokens == alone.usage.completion_tokens


def test_client_disconnect_frees_slot(client, server):
    stream = chat(client, "Count from one to a thousand.", temperature=0, max_tokens=400, stream=True)
    for c in stream:
        if c.choices and c.choices[0].delta.content:
            break
    assert server.metric("thaw_running_sequences") == 1
    stream.close()
    deadline = time.time() + 5
    while server.metric("thaw_running_sequences") != 0:
        assert time.time() < deadline, "slot not freed after the client went away"
        time.sleep(0.05)
    # The server still answers.
    assert chat(client, "Hi", max_tokens=2).choices[0].message.content is not None


def test_health_and_openapi(server):
    h = json.load(urllib.request.urlopen(server.root + "/health"))
    assert h["status"] == "ok"
    doc = json.load(urllib.request.urlopen(server.root + "/openapi.json"))
    assert doc["openapi"].startswith("3.")
