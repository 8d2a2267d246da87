"""Raw outputs decoded into what the scores compare, by each version's own codec.

Comparison (:mod:`workbench.runtime.scoring`) works on plain values: boxes ``(N, 4, 2)``
per image for text detection, texts for text recognition. A version published from a
PaddleX export carries its post-processing in the manifest's ``codec``;
:func:`codec_decoder` turns that into the ``decode(version, output)`` callable that
``compare``, deploy verification and replay take. The codec class is passed in
(``workbench.codecs.Codec``, by the CLI and the deploy layer, which sit above both): the
runtime and the codecs stay independent of each other. Without source images the boxes are
in the pixels of the model's input (the probability map's own size): the same frame for
every version compared on the same inputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from workbench.model.task import Task

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from workbench.model.manifest import Manifest

__all__ = ["DECODED_TASKS", "Decoding", "codec_decoder"]


class Decoding(Protocol):
    """What a codec offers here: its task and its post-processing of one batch's output
    (boxes with ``.boxes`` for detection, texts with ``.text`` for recognition)."""

    task: Task

    def decode(self, output: Any, metas: Sequence[Mapping[str, Any]]) -> list[Any]: ...

#: The tasks compared on decoded results rather than on raw tensors.
DECODED_TASKS = frozenset({Task.TEXT_DETECTION, Task.TEXT_RECOGNITION})


def codec_decoder(
    manifests: Mapping[str, Manifest], codec: Callable[[dict[str, Any]], Decoding]
) -> Callable[[str, Any], list[Any]] | None:
    """``decode(version, output)`` over each version's codec (keys: version strings), each
    built by ``codec`` from its manifest's spec (``workbench.codecs.Codec``).

    None unless every manifest declares text detection or recognition and has a codec.
    """
    codecs: dict[str, Decoding] = {}
    for version, manifest in manifests.items():
        if manifest.task not in DECODED_TASKS or manifest.codec is None:
            return None
        codecs[version] = codec(manifest.codec)
    if not codecs:
        return None

    def decode(version: str, output: Any) -> list[Any]:
        codec = codecs[version]
        if codec.task is Task.TEXT_DETECTION:
            metas = [{"shape": [output.shape[-2], output.shape[-1]]}] * len(output)
            return [found.boxes for found in codec.decode(output, metas)]
        return [read.text for read in codec.decode(output, [{}] * len(output))]

    return decode
