"""``ConsoleProgressBar``: Lightning's tqdm bar, drawn on the terminal of a quiet console.

Under ``loki.console.quiet_console`` the process's stdout is the run's log file, so Lightning's
own ``TQDMProgressBar`` (which writes to ``sys.stdout``) would draw into the log. This bar is the
same bar pointed at :func:`loki.console.stream`: the terminal when the console is quiet, stdout
otherwise. It holds no state of its own beyond Lightning's, and leaves the logger's version (``v_num``)
out of the bar's figures.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import redirect_stdout

from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

from loki.console import stream


def _on_console(init: Callable[[TQDMProgressBar], Tqdm]) -> Callable[[TQDMProgressBar], Tqdm]:
    # Lightning builds each bar with ``file=sys.stdout`` at the moment it is needed; pointing
    # sys.stdout at the console for that call keeps Lightning's layout and options unchanged.
    def on_console(self: TQDMProgressBar) -> Tqdm:
        with redirect_stdout(stream()):
            return init(self)

    return on_console


class ConsoleProgressBar(TQDMProgressBar):
    init_sanity_tqdm = _on_console(TQDMProgressBar.init_sanity_tqdm)
    init_train_tqdm = _on_console(TQDMProgressBar.init_train_tqdm)
    init_validation_tqdm = _on_console(TQDMProgressBar.init_validation_tqdm)
    init_predict_tqdm = _on_console(TQDMProgressBar.init_predict_tqdm)
    init_test_tqdm = _on_console(TQDMProgressBar.init_test_tqdm)

    def get_metrics(self, trainer, pl_module) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)  # the logger's version: a folder name, not a measurement
        return items
