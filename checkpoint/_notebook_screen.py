"""The live display in a Jupyter cell: one output of the cell, updated in place.

:class:`NotebookScreen` shows the display with IPython's ``display(..., display_id=True)``
and redraws it with ``update``: HTML for JupyterLab and the classic notebook, plain text
for everything else. What stays when the run ends (the last frame and the summary, in
that one output) is an ordinary static output that a saved notebook keeps. rich's own live
display in Jupyter is an ipywidgets ``Output`` whose content lives in the kernel: a
notebook reopened later says "Error displaying widget: model not found" in its place.

Imported only when a display starts in Jupyter (it imports rich and IPython).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.console import Console

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.text import Text

PRE = (
    '<pre style="white-space:pre;overflow-x:auto;margin:0;line-height:1.3;'
    "font-family:Menlo,'DejaVu Sans Mono',consolas,'Courier New',monospace\">{code}</pre>"
)
"""The HTML around the display. rich's own ``line-height:normal`` leaves no room below the
last line, whose underscores the scrolling ``<pre>`` then cuts off (``__main__.sq`` read
``main  .sq`` in JupyterLab); ``margin:0`` keeps no gap above the next output."""


def notebook_width() -> int:
    """The columns the display is laid out for (rich's Jupyter default, ``JUPYTER_COLUMNS``)."""
    try:
        return max(20, int(os.environ.get("JUPYTER_COLUMNS", "115")))
    except ValueError:
        return 115


def bundle(*parts: RenderableType, width: int | None = None) -> dict[str, str]:
    """``parts`` one under the other as a Jupyter MIME bundle: ``text/html`` and ``text/plain``.

    Lines are not wrapped: a long one scrolls (as in a terminal that does not wrap).
    """
    console = Console(
        file=io.StringIO(), record=True, width=width or notebook_width(), force_terminal=True,
        force_jupyter=False, color_system="truecolor", legacy_windows=False,
    )
    for part in parts:
        console.print(part, soft_wrap=True)
    text = console.export_text(clear=False)
    return {"text/html": console.export_html(inline_styles=True, code_format=PRE),
            "text/plain": text.rstrip("\n")}


def show(*parts: RenderableType) -> None:
    """Display ``parts`` as a new static output of the running cell."""
    from IPython.display import display

    display(bundle(*parts), raw=True)  # type: ignore[no-untyped-call]


class NotebookScreen:
    """The live display as an output of the running cell (see the module docstring).

    ``refresh`` and ``stop`` as rich's ``Live`` has them, so the reporter drives either.
    """

    def __init__(self, render: Callable[[int], Text]) -> None:
        from IPython.display import display

        self.render = render
        """``width -> the display as of now``."""
        self.width = notebook_width()
        self.handle: Any = display(  # type: ignore[no-untyped-call]
            self._bundle(), raw=True, display_id=True)

    def _bundle(self, *tail: RenderableType) -> dict[str, str]:
        frame = self.render(self.width)
        frame.end = "\n"  # the terminal's frame ends where the cursor stays
        return bundle(frame, *tail, width=self.width)

    def refresh(self) -> None:
        """Redraw the output with the display as of now."""
        self.handle.update(self._bundle(), raw=True)

    def stop(self, *tail: RenderableType) -> None:
        """Draw the last frame, with ``tail`` (the summary) under it in the same output."""
        self.handle.update(self._bundle(*tail), raw=True)
