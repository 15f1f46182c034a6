"""``ConsoleProgressBar``: Lightning's tqdm bar, drawn on the terminal of a quiet console.

Under ``loki.console.quiet_console`` the process's stdout is the run's log file, so Lightning's
own ``TQDMProgressBar`` (which writes to ``sys.stdout``) would draw into the log. This bar is the
same bar pointed at :func:`loki.console.stream`: the terminal when the console is quiet, stdout
otherwise. It holds no state of its own beyond Lightning's.
"""

from __future__ import annotations

from contextlib import redirect_stdout

from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

from loki.console import stream


class ConsoleProgressBar(TQDMProgressBar):
    # Lightning builds each bar with ``file=sys.stdout`` at the moment it is needed; pointing
    # sys.stdout at the console for that call keeps Lightning's layout and options unchanged.
    def init_sanity_tqdm(self) -> Tqdm:
        with redirect_stdout(stream()):
            return super().init_sanity_tqdm()

    def init_train_tqdm(self) -> Tqdm:
        with redirect_stdout(stream()):
            return super().init_train_tqdm()

    def init_validation_tqdm(self) -> Tqdm:
        with redirect_stdout(stream()):
            return super().init_validation_tqdm()

    def init_predict_tqdm(self) -> Tqdm:
        with redirect_stdout(stream()):
            return super().init_predict_tqdm()

    def init_test_tqdm(self) -> Tqdm:
        with redirect_stdout(stream()):
            return super().init_test_tqdm()
