"""Serving instances as local processes, nginx as a local process (:mod:`.backend`, :mod:`.router`)."""

from __future__ import annotations
