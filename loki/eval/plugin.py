"""Make ``lm_eval --model loki`` work from the shell.

lm-eval 0.4.13 finds models only in its registry: it never scans entry points (the
``[options.entry_points] lm_eval`` group in setup.cfg is not read by it), and its CLI imports no
user code before resolving ``--model``. Two ways in, both ending in lm-eval's own CLI:

1. ``python -m loki.eval --model loki --model_args checkpoint=...,tokenizer=... --tasks ...``
   (lm-eval's CLI, arguments unchanged, with the model registered first). No setup.
2. Opt-in startup hook: ``python -m loki.eval.plugin install`` writes ``loki_lm_eval.pth`` into
   site-packages; Python runs it at start-up, which only puts a tiny import watcher in place
   (standard library only). When ``lm_eval.api.registry`` is imported, the watcher registers
   ``"loki"`` lazily (as ``"loki.eval.adapter:LokiEvalLM"``, nothing heavy imported), so the plain
   ``lm_eval --model loki ...`` command works. ``python -m loki.eval.plugin uninstall`` removes it.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import sysconfig
from pathlib import Path

TARGET = "loki.eval.adapter:LokiEvalLM"
REGISTRY = "lm_eval.api.registry"
PTH_NAME = "loki_lm_eval.pth"


def register_lazily(registry_module) -> None:
    """Add ``"loki"`` to lm-eval's model registry without importing the adapter."""
    # lm-eval registers its built-in models only when it finds the registry empty: do it first
    importlib.import_module("lm_eval.models")
    if "loki" not in registry_module.model_registry:
        registry_module.model_registry.register("loki", target=TARGET)


class _RegistryWatcher(importlib.abc.MetaPathFinder):
    """Runs ``register_lazily`` right after lm-eval's registry module has executed."""

    def find_spec(self, name, path, target=None):
        if name != REGISTRY:
            return None
        sys.meta_path.remove(self)  # one shot; also lets find_spec below see the real finders
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _AfterExec(spec.loader)
        return spec


class _AfterExec(importlib.abc.Loader):
    def __init__(self, loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        try:
            register_lazily(module)
        except Exception as err:  # never break lm-eval itself because of the plugin
            print(f"loki: could not register the 'loki' lm-eval model: {err}", file=sys.stderr)


def watch() -> None:
    """Install the watcher (what the .pth line calls); a no-op once lm-eval is imported."""
    if REGISTRY in sys.modules:
        register_lazily(sys.modules[REGISTRY])
    elif not any(isinstance(f, _RegistryWatcher) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegistryWatcher())


def lm_eval_main() -> None:
    """lm-eval's CLI with the ``loki`` model registered (``python -m loki.eval``)."""
    from lm_eval.__main__ import cli_evaluate

    import loki.eval.adapter  # noqa: F401  (registers "loki")

    cli_evaluate()


def pth_path(site_dir: str | None = None) -> Path:
    return Path(site_dir or sysconfig.get_paths()["purelib"]) / PTH_NAME


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["install"]:
        path = pth_path(args[1] if len(args) > 1 else None)
        path.write_text("import loki.eval.plugin as _loki_plugin; _loki_plugin.watch()\n")
        print(f"wrote {path}: `lm_eval --model loki ...` now works in this environment")
    elif args[:1] == ["uninstall"]:
        path = pth_path(args[1] if len(args) > 1 else None)
        path.unlink(missing_ok=True)
        print(f"removed {path}")
    else:
        print("usage: python -m loki.eval.plugin install|uninstall [SITE_DIR]", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
