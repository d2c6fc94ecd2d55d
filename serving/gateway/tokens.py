"""The gateway's secret, and what it signs: feedback tokens that bind feedback to its answer, hashed user ids.

A feedback token is an HMAC of the request id, returned with each answer (`X-Feedback-Token`, and
`feedback_token` in the body). Whoever holds only a feedback key (a front end) can post feedback for an
answer it was shown, and for no other: request ids are minted by the gateway, and a token cannot be made
without the secret. The secret comes from LLMWATCH_SERVING__FEEDBACK_SECRET (give every gateway behind one
address the same), or is made once and kept in `<data dir>/gateway.secret`, readable by its owner only.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

SECRET_FILE = "gateway.secret"


def load_secret(configured: str, data_dir: Path) -> bytes:
    """The configured secret, else the one kept in the data dir (made on first use).

    Several gateway processes may start at once: the file is made whole beside its place and linked into
    it, which fails if another process was first; then every process reads the one that won.
    """
    if configured:
        return configured.encode()
    path = data_dir / SECRET_FILE
    while True:
        try:
            return bytes.fromhex(path.read_text().strip())
        except FileNotFoundError:
            pass
        except ValueError:  # damaged: made anew
            path.unlink(missing_ok=True)
        _create(path)


def _create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_bytes(32).hex())
        file.flush()
        os.fsync(file.fileno())
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink()


class Signer:
    def __init__(self, secret: bytes) -> None:
        self._feedback = hmac.new(secret, b"llmwatch feedback token", hashlib.sha256).digest()
        self._users = hmac.new(secret, b"llmwatch user id", hashlib.sha256).digest()

    def feedback_token(self, request_id: str) -> str:
        return hmac.new(self._feedback, request_id.encode(), hashlib.sha256).hexdigest()[:32]

    def valid(self, request_id: str, token: str | None) -> bool:
        """Constant time, like the key check: how long it takes says nothing about the right token."""
        return token is not None and hmac.compare_digest(self.feedback_token(request_id).encode(),
                                                         token.encode(errors="replace"))

    def user_hash(self, user_id: str) -> str:
        """The same user gives the same hash (events and feedback join); without the secret, no way back."""
        return "u-" + hmac.new(self._users, user_id.encode(errors="replace"), hashlib.sha256).hexdigest()[:32]
