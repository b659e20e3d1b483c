"""Refuse secrets in configuration: API keys and tokens belong in the environment.

Snakemake copies configuration into places that outlive a run: rule params and shell commands
into ``.snakemake/metadata/``, job scripts into ``.snakemake/scripts/``, error messages into
``.snakemake/log/``, and the TRL training arguments are pickled next to each policy
(``training_args.bin``). So a key in config would end up on disk, however it is used.
:func:`check` scans the merged config before anything else reads it (``common.smk`` calls it
before the schema validation, whose messages quote offending values) and raises
:class:`SecretInConfigError` naming every key path that holds a secret, never the secret.

Two kinds of finding:

* a key whose name says it holds a secret (``token``, ``hub_token``, ``hf_token``,
  ``auth_token``, ``api_key``, ``apikey``, ``secret``, ``password``, ``passwd``,
  ``credentials``, ...) and that holds a value (``null``, ``false``, ``true`` and empty values
  are let through: ``use_auth_token: true`` names no secret). Names are matched on whole
  segments (``snake_case``, ``kebab-case`` and ``camelCase`` split), so ``max_new_tokens``,
  ``stop_token_ids``, ``eos_token_id`` and ``tokenizer`` are not secrets, nor are the
  tokenizer's own tokens (``pad_token``, ``eos_token``, ``turn_end_token``, ...). A key that
  *names where* a secret lives (``api_key_env``, ``token_file``, ...) is not one.
* a value, anywhere (free-form blocks such as ``sampler.vllm``, a judge's ``request``, the
  training blocks, list items), that looks like a provider's key: ``sk-...`` (OpenAI and
  others), ``hf_...`` (Hugging Face), ``ghp_...``/``github_pat_...`` (GitHub), ``glpat-...``
  (GitLab), ``xoxb-...`` (Slack), ``AKIA...`` (AWS), ``AIza...`` (Google), ``Bearer ...``, a
  PEM private key, or a URL with a password (``https://user:pass@host``).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["SecretInConfigError", "check", "find"]

# segments that make a key name a secret wherever they stand
SECRET_WORDS = frozenset(
    {
        "secret",
        "secrets",
        "password",
        "passwords",
        "passwd",
        "passphrase",
        "credential",
        "credentials",
        "apikey",
        "apikeys",
        "authorization",
        "privatekey",
    }
)
# adjacent segment pairs that do (api_key, access_key, private_key, ...)
SECRET_PAIRS = frozenset(
    {
        ("api", "key"),
        ("api", "keys"),
        ("access", "key"),
        ("private", "key"),
        ("secret", "key"),
        ("auth", "key"),
        ("client", "secret"),
    }
)
# "<word>_token" where <word> makes it a token of the tokenizer's vocabulary, not a credential
VOCABULARY_TOKENS = frozenset(
    {
        "pad",
        "eos",
        "bos",
        "unk",
        "sep",
        "cls",
        "mask",
        "end",
        "start",
        "stop",
        "special",
        "turn",
        "eot",
        "eom",
        "image",
        "audio",
        "video",
        "placeholder",
        "system",
        "user",
        "assistant",
        "tool",
        "think",
        "begin",
        "im",
        "fim",
        "prefix",
        "suffix",
        "middle",
        "first",
        "last",
        "next",
        "default",
        "chat",
        "new",
        "response",
        "prompt",
        "separator",
        "decoder",
        "label",
    }
)
# trailing segments of a key that names where a secret lives, not the secret itself
POINTER_SUFFIXES = frozenset({"env", "var", "variable", "file", "path", "name"})

# what a provider's key looks like (anywhere in a string); the names go into the message
VALUE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (what, re.compile(pattern))
    for what, pattern in (
        ("an OpenAI-style API key (sk-...)", r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_-]{20,}"),
        ("a Hugging Face token (hf_...)", r"(?<![A-Za-z0-9])hf_[A-Za-z0-9]{30,}"),
        ("a GitHub token", r"(?<![A-Za-z0-9])(gh[pousr]_[A-Za-z0-9]{30,}|github_pat_\w{20,})"),
        ("a GitLab token (glpat-...)", r"(?<![A-Za-z0-9])glpat-[A-Za-z0-9_-]{20,}"),
        ("a Slack token (xox.-...)", r"(?<![A-Za-z0-9])xox[abposr]-[A-Za-z0-9-]{10,}"),
        ("an AWS access key id (AKIA...)", r"(?<![A-Z0-9])(AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])"),
        ("a Google API key (AIza...)", r"(?<![A-Za-z0-9])AIza[A-Za-z0-9_-]{30,}"),
        ("a bearer token", r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{16,}"),
        ("a private key", r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
        ("a URL with a password", r"\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@"),
    )
)


class SecretInConfigError(ValueError):
    """The configuration holds something that looks like a secret (the message names the key
    paths, never the values)."""


def _segments(name: str) -> list[str]:
    """``hubToken`` / ``hub-token`` / ``HUB_TOKEN`` -> ``["hub", "token"]``."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return [s for s in re.split(r"[^a-z0-9]+", spaced.lower()) if s]


def secret_name(name: str) -> bool:
    """Whether a key called ``name`` holds a secret (module docstring)."""
    segs = _segments(name)
    if not segs or segs[-1] in POINTER_SUFFIXES:
        return False
    if any(s in SECRET_WORDS for s in segs):
        return True
    if any(pair in SECRET_PAIRS for pair in itertools.pairwise(segs)):
        return True
    # "token" last (hub_token, hf_token, access_token, token), unless it is a vocabulary token;
    # "tokens" (max_new_tokens) and "token_id(s)" (eos_token_id) are counts and ids
    return segs[-1] == "token" and (len(segs) == 1 or segs[-2] not in VOCABULARY_TOKENS)


def secret_value(value: str) -> str | None:
    """What ``value`` looks like when it holds a provider's key, else None."""
    return next((what for what, pattern in VALUE_PATTERNS if pattern.search(value)), None)


def _holds_something(value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return False
    if isinstance(value, str | Mapping | list | tuple):
        return bool(value)
    return True  # a number: a PIN or a numeric password is still one


def find(config: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(key path, why) of every secret in ``config`` (nested mappings and lists), in order.

    Paths are dotted (``defaults.train.hub_token``), list items indexed (``sampling.stop[0]``);
    a key that itself looks like a provider's key shows as ``<redacted key>``.
    """
    found: list[tuple[str, str]] = []
    if isinstance(config, Mapping):
        for key, value in config.items():
            name = str(key)
            what = secret_value(name)
            path = prefix + ("<redacted key>" if what else name)
            if what:
                found.append((path, f"the key itself looks like {what}"))
            if secret_name(name) and _holds_something(value):
                found.append((path, "its name says it holds a secret"))
                continue  # one finding per secret
            found.extend(find(value, path + "."))
    elif isinstance(config, list | tuple):
        for i, value in enumerate(config):
            found.extend(find(value, f"{prefix.rstrip('.')}[{i}]."))
    elif isinstance(config, str):
        what = secret_value(config)
        if what:
            found.append((prefix.rstrip("."), f"its value looks like {what}"))
    return found


def _judge_key_variable() -> str:
    """The variable a judge reads its key from when ``api_key_env`` is not set."""
    import inspect

    from .judge_client import ChatClient

    return inspect.signature(ChatClient.__init__).parameters["api_key_env"].default


def check(config: Any, where: str = "config") -> None:
    """Raise :class:`SecretInConfigError` naming every secret's key path in ``config``.

    ``where`` prefixes the message (the file or block scanned). The values are never shown.
    """
    found = find(config)
    if not found:
        return
    lines = "\n".join(f"  {path}: {why}" for path, why in found)
    raise SecretInConfigError(
        f"{where}: refusing {len(found)} secret(s) in the configuration (values not shown):\n"
        f"{lines}\n"
        "API keys and tokens do not belong in config: Snakemake copies it into "
        ".snakemake/metadata, job scripts and logs, and training arguments are pickled next to "
        "each policy. Remove them and keep keys in the environment: a judge reads its key from "
        "the environment variable its api_key_env names (default "
        f"{_judge_key_variable()}), and the Hugging Face Hub reads HF_TOKEN."
    )
