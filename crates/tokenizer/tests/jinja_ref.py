#!/usr/bin/env python3
"""Reference chat-template rendering with Python's jinja2 and Hugging Face
transformers' semantics (trim_blocks, lstrip_blocks, loopcontrols, raise_exception,
strftime_now, json.dumps-based tojson). Reads a JSON list of cases
[{template, messages, add_generation_prompt, bos_token, eos_token, tools?}] from
argv[1], writes a JSON list of results {"ok": text} or {"error": message} to argv[2]."""
import json, sys
from datetime import datetime

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.now().strftime(fmt)


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = strftime_now

with open(sys.argv[1], encoding="utf-8") as f:
    cases = json.load(f)
results = []
for c in cases:
    ctx = {k: c[k] for k in ("messages", "add_generation_prompt", "bos_token", "eos_token")}
    if c.get("tools") is not None:
        ctx["tools"] = c["tools"]
    try:
        results.append({"ok": env.from_string(c["template"]).render(**ctx)})
    except Exception as e:  # the test compares the message
        results.append({"error": str(e)})
with open(sys.argv[2], "w", encoding="utf-8") as f:
    json.dump(results, f)
