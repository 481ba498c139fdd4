#!/usr/bin/env python3
"""Dev-time only: renders chat templates with Python's Jinja2 set up as
transformers' apply_chat_template does (utils/chat_template_utils.py:
ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, a
raise_exception global and a tojson filter), as a second reference beside
@huggingface/jinja. Called by make_chat_goldens.mjs.

stdin: {"template": str, "bos_token": str|null, "eos_token": str|null,
        "jobs": [{"messages": [...], "add_generation_prompt": bool,
                  "enable_thinking": bool (optional)}]}
stdout: [{"text": str} | {"error": str}] in job order.
"""
import json
import sys

from jinja2.exceptions import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


def raise_exception(message):
    raise TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def main():
    req = json.load(sys.stdin)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    template = env.from_string(req["template"])
    out = []
    for job in req["jobs"]:
        kwargs = {
            "messages": job["messages"],
            "tools": None,
            "documents": None,
            "add_generation_prompt": job["add_generation_prompt"],
        }
        if req.get("bos_token") is not None:
            kwargs["bos_token"] = req["bos_token"]
        if req.get("eos_token") is not None:
            kwargs["eos_token"] = req["eos_token"]
        if "enable_thinking" in job:
            kwargs["enable_thinking"] = job["enable_thinking"]
        try:
            out.append({"text": template.render(**kwargs)})
        except Exception as err:  # the template's raise_exception, or a Jinja error
            out.append({"error": str(err)})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
