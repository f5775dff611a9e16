"""Chat models: the template, its stop tokens and generation defaults, as the phone needs them.

A chat template is Jinja code that came with the checkpoint, so it is rendered only inside
jinja2's immutable sandbox, set up as transformers sets up its own (trim/lstrip blocks, loop
controls, `raise_exception`, `strftime_now`, a `tojson` that keeps non-ASCII, namespaces without
underscore names): the rendered text must equal `apply_chat_template`'s, and the tests check it.

Apps have no Jinja engine, so the export also derives a *portable* form: text before the
conversation, a prefix and suffix per role, the generation prompt and the default system message
the template inserts when the conversation has none. It is found by rendering sentinel
conversations and kept only where re-rendering the test conversations both ways gives the same
text; what it cannot express is reported by name (`unsupported`), never approximated.

Prompt ids of a chat are the rendered text encoded without the tokenizer's post-processor, as
`apply_chat_template(..., tokenize=True)` encodes it: a template that writes BOS itself (Llama 3,
Gemma) plus a runtime that adds one more is the double-BOS bug, so apps add no BOS to a chat
prompt (`bos_added_by_runtime`: 0) and tokenizer parity proves each device tokenizer feeds those ids.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import InputError

ROLES = ("system", "user", "assistant")
GENERATION_KEYS = ("temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens")
# Where transformers keeps a template, in the order it prefers them.
TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json", "tokenizer_config.json")

Message = dict[str, str]


class ChatTemplateError(InputError):
    """The checkpoint's chat template cannot be read or rendered."""


# The conversations every template is checked on (rendered by Jinja and by the portable form, and
# written into the manifest as the apps' test vectors), each with and without a generation prompt.
TEST_CONVERSATIONS: tuple[tuple[str, tuple[Message, ...]], ...] = (
    ("one user turn", ({"role": "user", "content": "What is the capital of France?"},)),
    ("system and user", ({"role": "system", "content": "You are a terse assistant. Answer in one line."},
                         {"role": "user", "content": "Name three primary colours."})),
    ("three turns", ({"role": "user", "content": "Hi! Can you help me?"},
                     {"role": "assistant", "content": "Of course. What do you need?"},
                     {"role": "user", "content": "A haiku about the sea, with “quotes” and café."})),
)


# ---------------------------------------------------------------------------------------------
# Reading the template


def _template_from(value: Any, where: str) -> str | None:
    """A template as transformers stores it: a string, or a list of {"name", "template"} of which
    "default" is the one apply_chat_template uses when not told otherwise."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        if isinstance(named.get("default"), str):
            return named["default"]
        raise ChatTemplateError(f"{where}: chat_template is a list of named templates without a \"default\" "
                                f"(names: {', '.join(str(n) for n in named)})")
    raise ChatTemplateError(f"{where}: chat_template is a {type(value).__name__}, expected a string or a list")


def read_chat_template(root: Path) -> tuple[str | None, str | None]:
    """(template text, the file it came from), or (None, None) for a model without one."""
    for name in TEMPLATE_FILES:
        path = root / name
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        if name.endswith(".jinja"):
            template = text
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise ChatTemplateError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
            template = _template_from(data.get("chat_template") if isinstance(data, dict) else None, str(path))
        if template is not None and template.strip():
            return template, name
    return None, None


# ---------------------------------------------------------------------------------------------
# Rendering in the sandbox


def _environment():
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationBlock(Extension):
        """`{% generation %}...{% endgeneration %}` marks assistant text for training masks;
        rendering keeps its body as is."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    class Namespace(jinja2.utils.Namespace):
        # underscore names on a namespace are a way out of the sandbox
        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                Namespace._check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            Namespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"a chat template may not set {name!r} on a namespace")

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationBlock, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, namespace=Namespace,
                       strftime_now=lambda fmt: datetime.now().strftime(fmt), dict=lambda *a, **k: dict(*a, **k))
    return env


def compile_template(template: str, where: str = "chat template") -> Callable[..., str]:
    """The template compiled in the sandbox; the result renders (messages, add_generation_prompt,
    **variables). A syntax error is a ChatTemplateError naming the line."""
    import jinja2

    try:
        compiled = _environment().from_string(template)
    except jinja2.TemplateSyntaxError as e:
        raise ChatTemplateError(f"{where}: not a valid Jinja template ({e.message} at line {e.lineno})") from None

    def render(messages: Sequence[Message], add_generation_prompt: bool = False, **variables: Any) -> str:
        return compiled.render(messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt,
                               tools=None, documents=None, **variables)

    return render


def template_variables(tokenizer_config: dict[str, Any]) -> dict[str, str]:
    """The special-token strings a template may use (bos_token, eos_token, ...), from
    tokenizer_config.json as transformers passes them."""
    out = {}
    for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
        value = tokenizer_config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            out[key] = value
    return out


# ---------------------------------------------------------------------------------------------
# The portable form


@dataclass
class Portable:
    """The template as strings an app concatenates (see the module docstring)."""

    prefix: str
    roles: dict[str, dict[str, str]]  # role -> {"prefix", "suffix"}
    generation_prompt: str
    default_system: str | None

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
        parts = [self.prefix]
        if self.default_system is not None and (not messages or messages[0]["role"] != "system"):
            system = self.roles["system"]
            parts += [system["prefix"], self.default_system, system["suffix"]]
        for message in messages:
            if message["role"] not in self.roles:
                raise ValueError(f"the portable template has no {message['role']!r} role")
            role = self.roles[message["role"]]
            parts += [role["prefix"], message["content"], role["suffix"]]
        if add_generation_prompt:
            parts.append(self.generation_prompt)
        return "".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"prefix": self.prefix, "roles": self.roles, "generation_prompt": self.generation_prompt,
                "default_system": self.default_system}


_SENTINEL = {"system": "QQSYSTEMQQ", "user": "QQUSERQQ", "user2": "QQUSERTWOQQ", "assistant": "QQASSISTANTQQ"}


def _split(text: str, *markers: str) -> list[str] | None:
    """The text around each marker (which must each appear once, in order), or None."""
    parts, rest = [], text
    for marker in markers:
        if rest.count(marker) != 1:
            return None
        before, rest = rest.split(marker)
        parts.append(before)
    return [*parts, rest]


def derive_portable(render: Callable[..., str]) -> tuple[Portable | None, list[str]]:
    """The portable form of a template (None when even a user turn cannot be expressed) and what
    it cannot express, found from sentinel conversations and checked on TEST_CONVERSATIONS."""
    import jinja2

    s = _SENTINEL
    user, user2, assistant, system = ({"role": "user", "content": s["user"]}, {"role": "user", "content": s["user2"]},
                                      {"role": "assistant", "content": s["assistant"]},
                                      {"role": "system", "content": s["system"]})

    def attempt(messages, add=False):
        try:
            return render(messages, add)
        except jinja2.TemplateError:
            return None

    one, one_prompted = attempt([user]), attempt([user], True)
    two, three = attempt([user, assistant]), attempt([user, assistant, user2])
    if None in (one, one_prompted, two, three):
        return None, ["the template refuses a user / assistant / user conversation"]
    if not one_prompted.startswith(one):
        return None, ["the generation prompt is not text appended after the conversation"]
    one_parts, two_parts, three_parts = _split(one, s["user"]), _split(two, s["user"], s["assistant"]), \
        _split(three, s["user"], s["assistant"], s["user2"])
    if None in (one_parts, two_parts, three_parts):
        return None, ["the template does not write each message's content once"]
    head, user_suffix = one_parts
    assistant_suffix = two_parts[2]
    if not (two_parts[1].startswith(user_suffix) and three_parts[2].startswith(assistant_suffix)):
        return None, ["a message's closing text depends on what follows it"]
    assistant_prefix = two_parts[1][len(user_suffix):]
    user_prefix = three_parts[2][len(assistant_suffix):]
    if not head.endswith(user_prefix):
        return None, ["the first user turn opens differently from later ones"]
    head = head[:len(head) - len(user_prefix)]
    roles = {"user": {"prefix": user_prefix, "suffix": user_suffix},
             "assistant": {"prefix": assistant_prefix, "suffix": assistant_suffix}}
    portable = Portable(head, roles, one_prompted[len(one):], None)

    unsupported = []
    with_system = attempt([system, user])
    system_parts = _split(with_system, s["system"], s["user"]) if with_system is not None else None
    if system_parts is None or not system_parts[1].endswith(user_prefix):
        unsupported.append("system messages (the template " + ("refuses them" if with_system is None else
                                                               "does not render them as their own turn") + ")")
    else:
        opening, closing = system_parts[0], system_parts[1][:len(system_parts[1]) - len(user_prefix)]
        if len(head) > len(opening) and head.startswith(opening) and head.endswith(closing):
            # a system turn is always there: the template's default when the conversation has none
            portable.prefix = ""
            portable.default_system = head[len(opening):len(head) - len(closing)]
            roles["system"] = {"prefix": opening, "suffix": closing}
        elif opening.startswith(head):
            roles["system"] = {"prefix": opening[len(head):], "suffix": closing}
        else:
            unsupported.append("system messages (the text before a system turn differs from the conversation's "
                               "opening)")

    def differences(with_system: bool) -> list[str]:
        return [f"conversation {name!r}{' with a generation prompt' if prompted else ''} renders differently ({where})"
                for name, messages, prompted, where in _check_renders(render, portable)
                if any(m["role"] == "system" for m in messages) == with_system]

    wrong = differences(with_system=False)
    if wrong:  # not even user and assistant turns: no portable form
        return None, unsupported + wrong
    wrong = differences(with_system=True) if "system" in roles else []
    if wrong:  # the turns work, a system prompt does not: apps offer none
        del roles["system"]
        portable.default_system = None
        portable.prefix = head
        unsupported.append("system messages (" + "; ".join(wrong) + ")")
        if differences(with_system=False):
            return None, unsupported
    return portable, unsupported


def _check_renders(render: Callable[..., str], portable: Portable):
    """(name, messages, add_generation_prompt, where) for each test conversation the portable form
    renders differently from Jinja (system conversations only when it has a system role)."""
    for name, messages in TEST_CONVERSATIONS:
        if any(m["role"] not in portable.roles for m in messages):
            continue
        for prompted in (False, True):
            expected, got = render(messages, prompted), portable.render(messages, prompted)
            if expected != got:
                i = next((k for k, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b),
                         min(len(expected), len(got)))
                yield name, messages, prompted, f"first difference at character {i}: {expected[i:i + 20]!r} " \
                                                f"vs {got[i:i + 20]!r}"


# ---------------------------------------------------------------------------------------------
# What the export ships


@dataclass
class ChatSpec:
    """Everything about a checkpoint's chat format that travels to the phone."""

    template: str
    source: str
    stop_token_ids: list[int]
    end_of_turn: str | None  # the token the template closes an assistant turn with
    bos_in_template: bool  # the rendered text starts with the bos token's string
    portable: Portable | None
    unsupported: list[str]
    generation: dict[str, Any]
    variables: dict[str, str]  # the special-token strings the template is rendered with (bos_token, ...)
    vectors: list[dict[str, Any]] = field(default_factory=list)

    def to_manifest(self) -> dict[str, Any]:
        return {"template": self.template, "template_source": self.source, "template_variables": self.variables,
                "stop_token_ids": self.stop_token_ids,
                "end_of_turn_token": self.end_of_turn, "bos_in_template": self.bos_in_template,
                "add_special_tokens": False, "bos_added_by_runtime": 0,
                "portable": self.portable.to_json() if self.portable else None, "unsupported": self.unsupported,
                "generation": self.generation, "vectors": self.vectors}


def generation_defaults(generation_config: dict[str, Any]) -> dict[str, Any]:
    """The sampling defaults generation_config.json states (only those it states)."""
    return {k: generation_config[k] for k in GENERATION_KEYS
            if isinstance(generation_config.get(k), (int, float)) and not isinstance(generation_config[k], bool)}


def chat_prompt_ids(tokenizer, text: str) -> list[int]:
    """A rendered chat encoded as apply_chat_template(tokenize=True) encodes it: no post-processor."""
    return tokenizer.encode(text, add_special_tokens=False).ids


def load_chat_spec(root: Path, tokenizer_json: Path, tokenizer_config: dict[str, Any], eos_ids: Sequence[int],
                   generation_config: dict[str, Any]) -> ChatSpec | None:
    """The chat spec of the checkpoint in `root`, or None for a model without a chat template."""
    from tokenizers import Tokenizer

    template, source = read_chat_template(root)
    if template is None:
        return None
    where = str(root / source)
    render_jinja = compile_template(template, where)
    variables = template_variables(tokenizer_config)

    def render(messages, add_generation_prompt=False):
        return render_jinja(messages, add_generation_prompt, **variables)

    import jinja2

    try:
        first = render(TEST_CONVERSATIONS[0][1], True)
    except jinja2.TemplateError as e:
        raise ChatTemplateError(f"{where}: the template fails on a one-message conversation ({e})") from None
    portable, unsupported = derive_portable(render)
    tokenizer = Tokenizer.from_file(str(tokenizer_json))

    end_of_turn = None
    if portable is not None:
        closing = chat_prompt_ids(tokenizer, portable.roles["assistant"]["suffix"])
        added = {t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special}
        if closing and tokenizer.id_to_token(closing[0]) in added:
            end_of_turn = tokenizer.id_to_token(closing[0])
    stop = list(dict.fromkeys([*eos_ids, *([tokenizer.token_to_id(end_of_turn)] if end_of_turn else [])]))
    bos = variables.get("bos_token")
    vectors = []
    for name, messages in TEST_CONVERSATIONS:
        for prompted in (False, True):
            try:
                text = render(messages, prompted)
            except jinja2.TemplateError as e:  # a template may refuse a role: the vector says so
                vectors.append({"name": name, "messages": list(messages), "add_generation_prompt": prompted,
                                "error": str(e)})
                continue
            vectors.append({"name": name, "messages": list(messages), "add_generation_prompt": prompted,
                            "text": text, "ids": chat_prompt_ids(tokenizer, text)})
    return ChatSpec(template, source, stop, end_of_turn, bool(bos) and first.startswith(bos), portable, unsupported,
                    generation_defaults(generation_config), variables, vectors)


def portable_from_json(data: dict[str, Any]) -> Portable:
    return Portable(data["prefix"], data["roles"], data["generation_prompt"], data.get("default_system"))


def check_manifest_chat(chat: dict[str, Any]) -> list[str]:
    """Problems (empty: consistent) with a manifest's chat section: its template, rendered in the
    sandbox with its template_variables, and its portable form must each give every vector's text
    (the portable form only for the roles it has)."""
    import jinja2

    problems = []
    render = compile_template(chat["template"], "manifest chat.template")
    portable = portable_from_json(chat["portable"]) if chat.get("portable") else None
    for vector in chat.get("vectors", []):
        if "text" not in vector:
            continue
        label = f"{vector['name']!r}{' + generation prompt' if vector['add_generation_prompt'] else ''}"
        try:
            text = render(vector["messages"], vector["add_generation_prompt"], **chat.get("template_variables", {}))
        except jinja2.TemplateError as e:
            problems.append(f"chat vector {label}: the template fails ({e})")
            continue
        if text != vector["text"]:
            problems.append(f"chat vector {label}: the template renders other text than the vector's")
        if portable and all(m["role"] in portable.roles for m in vector["messages"]) \
                and portable.render(vector["messages"], vector["add_generation_prompt"]) != vector["text"]:
            problems.append(f"chat vector {label}: the portable form renders other text than the template")
    return problems
