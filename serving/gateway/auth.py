"""API keys: who may call what. Keys are compared in constant time and never logged or published.

Client keys open everything an app needs (completions, models, feedback); feedback keys open only
POST /v1/feedback (safe to ship in a front end: such feedback must carry its answer's feedback token);
admin keys open /admin. With no client key configured the gateway is open (development on loopback;
`serving.stack` refuses to bind elsewhere), and the admin API then too; once client keys are set, admin
needs its own key. The operations endpoints (/metrics, /health, /docs, /openapi.json) take a client or an
admin key while the gateway listens beyond loopback, unless `ops_open` says to leave them open there too.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import SecretStr

Scope = Literal["client", "feedback", "admin", "ops"]


def presented_key(headers: Mapping[str, str]) -> str | None:
    """`Authorization: Bearer <key>` (what OpenAI clients send), or `X-API-Key: <key>`."""
    authorization = headers.get("authorization", "")
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return headers.get("x-api-key") or None


class KeyRing:
    def __init__(self, client: Sequence[SecretStr], feedback: Sequence[SecretStr], admin: Sequence[SecretStr],
                 *, ops_open: bool = False) -> None:
        def raw(keys: Sequence[SecretStr]) -> tuple[bytes, ...]:
            return tuple(key.get_secret_value().encode() for key in keys if key.get_secret_value())

        self.open = not raw(client)
        self.ops_open = ops_open or self.open
        self._keys: dict[Scope, tuple[bytes, ...]] = {
            "client": raw(client), "feedback": raw(client) + raw(feedback), "admin": raw(admin),
            "ops": raw(client) + raw(admin),
        }

    def refusal(self, scope: Scope, presented: str | None) -> str | None:
        """Why a request with this key may not use this scope, or None when it may."""
        keys = self._keys[scope]
        if scope == "ops" and self.ops_open:
            return None
        if not keys:
            if self.open:
                return None
            return "the admin API is off: set LLMWATCH_SERVING__ADMIN_API_KEYS on the gateway to use it"
        if presented is None:
            return "missing API key: send `Authorization: Bearer <key>`"
        return None if self._matches(keys, presented) else "wrong API key"

    def trusted_producer(self, presented: str | None) -> bool:
        """A client key (an app's back end) or an open gateway: trusted as the SDK's producers are."""
        return self.open or (presented is not None and self._matches(self._keys["client"], presented))

    @staticmethod
    def _matches(keys: tuple[bytes, ...], presented: str) -> bool:
        candidate = presented.encode(errors="replace")
        matched = False
        for key in keys:  # no early exit: the time taken does not depend on which key matched
            matched |= hmac.compare_digest(candidate, key)
        return matched
