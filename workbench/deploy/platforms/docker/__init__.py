"""Containers on one Docker engine or a fleet of them (:mod:`.backend`, :mod:`.fleet`), reached
through :mod:`.engine`; nginx in a container (:mod:`.router`)."""

from __future__ import annotations
