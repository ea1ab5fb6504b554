"""SuperNode authentication key pairs, in the format Flower 1.42 reads.

With ``flower-superlink --enable-supernode-auth`` only SuperNodes whose public key was
registered (``flwr supernode register KEY.pub CONNECTION``) may join. A SuperNode proves
its identity by signing its requests with the private key given as
``flower-supernode --auth-supernode-private-key``. Flower loads both keys with
``cryptography``'s OpenSSH loaders and wants an elliptic-curve key on a NIST curve, so
:func:`make_node_keys` writes, per node, ``node<i>`` (OpenSSH private key, P-384, readable by
the owner only) and ``node<i>.pub`` (one ``ecdsa-sha2-nistp384 ...`` line) — what
``ssh-keygen -t ecdsa -b 384`` would write. (In 1.42 the SuperNode derives its public key from
the private one; ``--auth-supernode-public-key`` is deprecated.)
"""
from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def node_key_paths(out: str | Path, i: int) -> tuple[Path, Path]:
    """``(private, public)`` key files of node ``i`` in ``out``."""
    private = Path(out) / f"node{i}"
    return private, private.with_name(private.name + ".pub")


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make_node_keys(out: str | Path, nodes: int, comment: str = "clsim") -> list[tuple[Path, Path]]:
    """Write a fresh key pair per node (``node0``/``node0.pub`` ...) into ``out``; return their paths.

    Existing files are overwritten: a new pair needs registering again."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(nodes):
        key = ec.generate_private_key(ec.SECP384R1())
        private, public = node_key_paths(out, i)
        _write_private(private, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                  serialization.NoEncryption()))
        line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        public.write_bytes(line + f" {comment}-node{i}\n".encode())
        pairs.append((private, public))
    return pairs


def check_public_key(path: str | Path) -> None:
    """Raise ``ValueError`` unless ``path`` holds an OpenSSH EC public key on a NIST curve (what
    ``flwr supernode register`` accepts)."""
    key = serialization.load_ssh_public_key(Path(path).read_bytes())
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError(f"not an elliptic-curve public key ({type(key).__name__})")


def check_private_key(path: str | Path) -> None:
    """Raise ``ValueError`` unless ``path`` holds an unencrypted OpenSSH EC private key (what
    ``flower-supernode --auth-supernode-private-key`` loads)."""
    key = serialization.load_ssh_private_key(Path(path).read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"not an elliptic-curve private key ({type(key).__name__})")
