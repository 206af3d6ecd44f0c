"""The config as it may be written down: environment interpolations left unresolved.

A run needs the values of ``${oc.env:NAME}`` (``data.dir``, ``data.cache_dir``, anything a user points
at an environment variable), but the files it writes (``config.yaml``), an evaluation's and an
export's copies (``xlt_config.yaml``, the model card) and the logger's run config (W&B) must not carry
them: the same path would carry ``WANDB_API_KEY`` or ``HF_TOKEN``. Every writer of a config goes
through :func:`public_container` / :func:`public_yaml`, which put back the ``${oc.env:...}`` text for
every key whose value came from the environment (directly, or by interpolating such a key).

:func:`xlt.config.validate` resolves the config in place, so it calls :func:`remember_env_keys` on the
unresolved config first; a config that still holds its interpolations is read directly. A leaf module.
"""

from __future__ import annotations

import re
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

ENV_RESOLVER = "oc.env"
_REFERENCE = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")
# Path (tuple of keys and list indices) -> unresolved text, of the config validate() saw last.
_ENV_KEYS: dict[tuple[Any, ...], str] = {}


def _raw_leaves(node: Any, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], Any]:
    if isinstance(node, dict):
        out: dict[tuple[Any, ...], Any] = {}
        for key, value in node.items():
            out.update(_raw_leaves(value, (*path, key)))
        return out
    if isinstance(node, list):
        out = {}
        for i, value in enumerate(node):
            out.update(_raw_leaves(value, (*path, i)))
        return out
    return {path: node}


def env_keys(cfg: DictConfig | ListConfig) -> dict[tuple[Any, ...], str]:
    """The leaves of ``cfg`` whose value comes from the environment, with their unresolved text: an
    ``${oc.env:...}`` interpolation, or an interpolation of another such key (to any depth)."""
    raw = _raw_leaves(OmegaConf.to_container(cfg, resolve=False))
    texts = {p: v for p, v in raw.items() if isinstance(v, str) and "${" in v}
    found = {p: v for p, v in texts.items() if ENV_RESOLVER + ":" in v}
    changed = True
    while changed:
        changed = False
        dotted = {".".join(map(str, p)) for p in found}
        for path, text in texts.items():
            if path in found:
                continue
            for ref in _REFERENCE.findall(text):
                if any(ref == d or ref.startswith(d + ".") or d.startswith(ref + ".") for d in dotted):
                    found[path] = text
                    changed = True
                    break
    return found


def remember_env_keys(cfg: DictConfig) -> None:
    """Record, before ``cfg`` is resolved, which of its keys come from the environment."""
    _ENV_KEYS.clear()
    _ENV_KEYS.update(env_keys(cfg))


def public_container(cfg: DictConfig) -> dict[str, Any]:
    """A resolved plain-dict copy of ``cfg`` with every environment-derived value replaced by its
    ``${oc.env:...}`` text (those of the config last validated, and any ``cfg`` still holds)."""
    keys = {**_ENV_KEYS, **env_keys(cfg)}
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    for path, text in keys.items():
        node: Any = container
        for part in path[:-1]:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                node = None
                break
        if (
            isinstance(node, dict)
            and path[-1] in node
            or isinstance(node, list)
            and isinstance(path[-1], int)
            and path[-1] < len(node)
        ):
            node[path[-1]] = text
    return {str(k): v for k, v in container.items()}


def public_yaml(cfg: DictConfig) -> str:
    """:func:`public_container` as YAML (what config.yaml, xlt_config.yaml and model cards hold)."""
    return OmegaConf.to_yaml(OmegaConf.create(public_container(cfg)))
