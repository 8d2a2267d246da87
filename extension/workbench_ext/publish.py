"""``%paddle publish``: an export directory published as a version, from a notebook.

The same as ``workbench models publish`` (a PaddleX export needs no sample: its
``inference.yml`` gives the signature, task and codec), with ``--runtime auto``'s
tries under a tqdm bar and the tried settings shown as a table after.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from workbench.model import AUTO, RuntimeSettings, progress_label, tuning_steps
from workbench_ext.panels import html_table
from workbench_ext.progress import run_with_progress

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from workbench.model import Manifest, RuntimeTrial
    from workbench_ext.state import Session


@dataclass(frozen=True)
class Published:
    """A version just published: its manifest and, after ``--runtime auto``, what was tried."""

    manifest: Manifest

    @property
    def ref(self) -> str:
        return f"{self.manifest.model}:{self.manifest.version}"

    def trials(self) -> pd.DataFrame:
        """One row per runtime setting tried: p50 ms, and chosen, ok or why it was dropped."""
        import pandas as pd

        rows = []
        for trial in self.manifest.runtime_trials:
            chosen = trial.settings == self.manifest.runtime
            rows.append({
                "runtime settings": trial.settings.describe(),
                "p50_ms": trial.p50_ms,
                "result": "chosen" if chosen else ("ok" if trial.ok else f"dropped: {trial.reason}"),
            })
        return pd.DataFrame(rows, columns=["runtime settings", "p50_ms", "result"])

    def summary(self) -> str:
        m = self.manifest
        return f"published {self.ref} ({len(m.files)} files, task {m.task.value}, runtime {m.runtime})"

    def __repr__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        head = f"<p>{html.escape(self.summary())}</p>"
        if not self.manifest.runtime_trials:
            return head
        return head + "<b>--runtime auto</b>" + html_table(self.trials().set_index("runtime settings"))


def publish(
    session: Session,
    model: str,
    version: str,
    source: Path,
    *,
    runtime: str | None = None,
    config: Path | None = None,
    notes: str = "",
    progress: bool = True,
) -> Published:
    """Publish ``source`` as ``model:version`` into the session's repository."""
    settings: RuntimeSettings | str | None = None
    if runtime is not None:
        settings = AUTO if runtime.strip().lower() == AUTO else RuntimeSettings.parse(runtime)
    auto = settings == AUTO
    steps = len(tuning_steps(RuntimeSettings()))
    state: dict[str, Any] = {"done": 0, "label": "reference run"}

    def report(done: int, total: int, trial: RuntimeTrial | None) -> None:
        # the reference run, each candidate loaded and checked, the timing rounds, then
        # the neighbours of the fastest and the timing rounds of all survivors
        state["done"] = done
        state["label"] = progress_label(done, total)

    manifest = run_with_progress(
        lambda: session.repo.publish(
            model, version, source, runtime=settings, config=config, notes=notes,
            progress=report if auto else None,
        ),
        desc=f"publish {model}:{version}" + (" (--runtime auto)" if auto else ""),
        steps=None if auto else [f"publish {model}:{version}"],
        done=(lambda: int(state["done"])) if auto else None,
        total=steps if auto else None,
        status=lambda: str(state["label"]),
        unit="step",
        disable=not progress,
    )
    return Published(manifest)
