"""Signing and verifying version directories with OpenSSF ``model-signing``.

A version is signed with an elliptic-curve private key (PEM) into a detached
``model.sig`` inside the version directory; it covers every file, the manifest
included. Verification needs only the public key and works offline. Keys can be
made with :func:`generate_keypair`.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from workbench._fs import atomic_path
from workbench.errors import MissingDependencyError, SignatureError
from workbench.model.manifest import SIGNATURE_NAME

if TYPE_CHECKING:
    from pathlib import Path

log = logging.getLogger(__name__)
_MISMATCH = re.compile(r"Hash mismatch for '([^']+)'")


def _model_signing() -> Any:
    try:
        import model_signing
        import model_signing.hashing
        import model_signing.signing
        import model_signing.verifying
    except ModuleNotFoundError as exc:  # pragma: no cover - a core dependency
        raise MissingDependencyError("model-signing", "cpu") from exc
    return model_signing


def _hashing_config(ms: Any, version_dir: Path) -> Any:
    return ms.hashing.Config().set_ignored_paths(paths=[version_dir / SIGNATURE_NAME])


def sign_directory(version_dir: Path, private_key: Path, password: str | None = None) -> Path:
    """Sign ``version_dir`` in place; the signature file is replaced atomically."""
    ms = _model_signing()
    target = version_dir / SIGNATURE_NAME
    try:
        # the temp file waits outside the directory being hashed (and hidden from readers)
        with atomic_path(target, tmp_dir=version_dir.parent) as tmp:
            (
                ms.signing.Config()
                .use_elliptic_key_signer(private_key=private_key, password=password)
                .set_hashing_config(_hashing_config(ms, version_dir))
                .sign(version_dir, tmp)
            )
    except (ValueError, OSError) as exc:
        raise SignatureError(f"cannot sign {version_dir}: {exc}") from exc
    return target


def verify_directory(version_dir: Path, public_key: Path, *, label: str = "") -> None:
    """Verify the signature of ``version_dir``; raise SignatureError naming what changed."""
    label = label or str(version_dir)
    signature = version_dir / SIGNATURE_NAME
    if not signature.exists():
        raise SignatureError(
            f"{label} is not signed, and a verification key is configured: "
            f"sign it with `workbench models sign` or remove the key"
        )
    ms = _model_signing()
    try:
        (
            ms.verifying.Config()
            .use_elliptic_key_verifier(public_key=public_key)
            .set_hashing_config(_hashing_config(ms, version_dir))
            .verify(version_dir, signature)
        )
    except ValueError as exc:
        text = str(exc)
        changed = _MISMATCH.findall(text)
        if changed:
            raise SignatureError(
                f"{label}: signature does not match file {changed[0]!r} (it changed after signing)",
                path=changed[0],
            ) from exc
        raise SignatureError(f"{label}: signature does not verify: {text[:300]}") from exc
    log.debug("signature of %s verified", label)


def generate_keypair(private_path: Path, public_path: Path) -> None:
    """Write a new P-256 key pair as PEM files (the private key readable by the owner only)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    private_path.chmod(0o600)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
