"""Secrets out of everything that records a config: the CSV ``config.yaml``, the wandb run
config, checkpoints' hyper-parameters, reports and event logs.

Two tests, both applied everywhere: a *key* whose name says it holds a credential (``api_key``,
``password``, ``HF_TOKEN``, ...) has its whole value replaced; a *value* is scanned for what
credentials look like wherever they sit inside a string: provider token prefixes (``sk-``,
``hf_``, ``ghp_``, ...), a password in a URL's user-info (``https://user:pw@host``), and
query-string parameters with a credential's name (``...?key=...&sig=...``). Only the secret
part is replaced, so a redacted URL still says where it pointed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "[redacted]"

# Names of config keys that hold credentials. Matched on the key only (case-insensitive) and kept
# narrow on purpose: "tokenizer", "tokens_seen" or "max_new_tokens" are not secrets here.
_SECRET_KEY = re.compile(
    r"(api_?key|secret|passw(or)?d|credential|authorization|bearer|access_?token|auth_?token"
    r"|hf_?token|wandb_?key|^token$|_key$)",
    re.IGNORECASE,
)
_ENV_TOKEN = re.compile(r"^[A-Z0-9_]*TOKEN[A-Z0-9_]*$")  # HF_TOKEN, GITHUB_TOKEN, ...
# Query-string parameter names that carry credentials (besides every _SECRET_KEY name).
_SECRET_PARAM = re.compile(
    r"^(key|apikey|token|auth|pass|pwd|sig|signature|code|x-amz-signature|x-amz-credential"
    r"|x-amz-security-token|x-goog-signature|x-goog-credential)$", re.IGNORECASE)
# Credentials by their look, anywhere in a string.
_TOKEN = re.compile(
    r"(?<![A-Za-z0-9])(sk-(?:proj-|ant-)?|sk_live_|rk_live_|hf_|ghp_|gho_|ghs_|github_pat_"
    r"|xox[bpas]-|glpat-)[A-Za-z0-9_\-]{8,}|(?<![A-Z0-9])AKIA[A-Z0-9]{16}(?![A-Z0-9])")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/\-]{8,}=*")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^/\s:@]*:)([^@/\s]+)(@)")
_QUERY = re.compile(r"([?&;])([^=&;#\s]+)=([^&;#\s]*)")


def secret_key(key: str) -> bool:
    """True for a config key whose value is a credential."""
    return bool(_SECRET_KEY.search(key) or _ENV_TOKEN.match(key))


def _param(match: re.Match) -> str:
    sep, name, value = match.groups()
    if value and value != REDACTED and (secret_key(name) or _SECRET_PARAM.match(name)):
        return f"{sep}{name}={REDACTED}"
    return match.group(0)


def redact_text(text: str) -> str:
    """``text`` with every credential-looking part replaced (the rest left as it was)."""
    out = _TOKEN.sub(REDACTED, text)
    out = _BEARER.sub(lambda m: m.group(1) + REDACTED, out)
    out = _USERINFO.sub(lambda m: m.group(1) + REDACTED + m.group(3), out)
    if "=" in out and ("?" in out or "&" in out or ";" in out):
        out = _QUERY.sub(_param, out)
    return out


def is_secret(key: str, value: Any = None) -> bool:
    """True for a config entry whose value must not be recorded as it is."""
    if secret_key(key):
        return True
    return isinstance(value, str) and redact_text(value) != value


def redact(config: Any) -> Any:
    """A copy of ``config`` (nested mappings, lists, tuples, strings) with secrets replaced.

    Mappings come back as plain dicts; values of other types are returned as they are."""
    if isinstance(config, Mapping):
        return {k: (REDACTED if secret_key(str(k)) and config[k] not in (None, "")
                    else redact(config[k])) for k in config}
    if isinstance(config, tuple):
        return tuple(redact(v) for v in config)
    if isinstance(config, list):
        return [redact(v) for v in config]
    if isinstance(config, str):
        return redact_text(config)
    return config


def secret_paths(config: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the entries of ``config`` that ``redact`` changes."""
    out: list[str] = []
    if isinstance(config, Mapping):
        for k, v in config.items():
            path = f"{prefix}{k}"
            if is_secret(str(k), v) and v not in (None, ""):
                out.append(path)
            else:
                out += secret_paths(v, path + ".")
    return out


def plain(value: Any) -> Any:
    """JSON-friendly config values (jsonargparse Namespaces, dataclasses, paths, classes)."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    elif hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
