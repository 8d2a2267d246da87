"""The two tqdm bars the extension adds: a notebook widget that saves well, and a line-per-change bar.

Imported only when a bar is drawn (tqdm.notebook imports ipywidgets).
"""

from __future__ import annotations

import io
import sys
import time
from typing import Any

from tqdm.notebook import tqdm as tqdm_notebook
from tqdm.std import tqdm as tqdm_std

from workbench_ext._ipython import display as show


class NotebookBar(tqdm_notebook):  # type: ignore[misc]
    """tqdm's ipywidgets bar, displayed with a display id and re-published when it closes.

    A notebook keeps an output as it was displayed: tqdm's bar shows ``0%`` in its
    text form (what nbconvert, GitHub and a reopened notebook without widget state
    show) however far it got. Updating the display at close writes the final state.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._handle: Any = None
        kwargs["display"] = False
        super().__init__(*args, **kwargs)
        if not self.disable and self.delay <= 0:
            self._show()

    def _show(self) -> None:
        if self._handle is None:
            self._handle = show(self.container, display_id=True)
        self.displayed = True

    def display(self, *args: Any, check_delay: bool = True, **kwargs: Any) -> Any:
        shown = self.displayed
        self.displayed = True  # tqdm's own display(container) would have no display id
        try:
            return super().display(*args, check_delay=check_delay, **kwargs)
        finally:
            self.displayed = shown
            if check_delay and not shown and time.time() - self.start_t >= self.delay:
                self._show()

    def close(self) -> None:
        if self.disable:
            return
        super().close()
        if self._handle is not None:
            self._handle.update(self.container)  # the final state, in every form


class LineBar(tqdm_std):  # type: ignore[misc]
    """A bar for streams that are not terminals: a new line when the count or step changes.

    tqdm redraws with ``\\r``, which a pipe, a log file or a captured stream keeps as
    the same line many times over. This one writes a line only when what it says
    (apart from the clock) changed, and the final state once when it closes.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._out = kwargs.pop("file", None) or sys.stderr
        self._said: tuple[Any, ...] | None = None
        kwargs["file"] = io.StringIO()  # tqdm's own writes (\r, padding) go nowhere
        kwargs["dynamic_ncols"] = False
        kwargs["ncols"] = 100
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if self.disable or msg == "":
            return True
        if time.time() - self.start_t < self.delay:
            return True
        said = (self.n, self.total, self.postfix, self.desc)
        if said != self._said:
            self._said = said
            self._out.write(self.__str__().rstrip() + "\n")
            self._out.flush()
        return True

    def close(self) -> None:
        if self.disable:
            return
        shown = self._said is not None
        super().close()
        if shown:
            self.display()
