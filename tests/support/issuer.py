"""An OIDC issuer on loopback for the tests: its discovery document, its JWKS (an RSA key
with a `kid`) and userinfo, served over HTTP, and tokens signed with PyJWT."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

KID = "test-key-1"
AUDIENCE = "ondrop-tests"


def entitlement(vo: str) -> str:
    """An EGI Check-in entitlement naming membership of `vo`."""
    return f"urn:mace:egi.eu:group:{vo}:role=member#aai.egi.eu"


@dataclass
class Issuer:
    url: str
    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    # userinfo's claims by token: the groups a token does not carry itself
    userinfo: dict[str, dict[str, Any]] = field(default_factory=dict)
    userinfo_calls: int = 0

    def token(
        self,
        sub: str,
        vos: tuple[str, ...] = (),
        audience: str = AUDIENCE,
        lifetime: float = 300,
        in_userinfo: bool = False,
        key: rsa.RSAPrivateKey | None = None,
        issuer: str | None = None,
    ) -> str:
        now = time.time()
        claims: dict[str, Any] = {
            "iss": issuer or self.url,
            "sub": sub,
            "aud": audience,
            "iat": int(now),
            "exp": int(now + lifetime),
            "name": sub.title(),
        }
        groups = {"eduperson_entitlement": [entitlement(vo) for vo in vos]}
        if not in_userinfo:
            claims.update(groups)
        token = jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": KID})
        if in_userinfo:
            self.userinfo[token] = {"sub": sub, **groups}
        return token

    def jwks(self) -> dict[str, Any]:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**public, "kid": KID, "use": "sig", "alg": "RS256"}]}


@contextmanager
def serving_issuer() -> Iterator[Issuer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    issuer = Issuer(f"http://127.0.0.1:{server.server_address[1]}/realms/test")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            base = "/realms/test"
            if self.path == f"{base}/.well-known/openid-configuration":
                self._json(
                    {
                        "issuer": issuer.url,
                        "jwks_uri": f"{issuer.url}/certs",
                        "userinfo_endpoint": f"{issuer.url}/userinfo",
                    }
                )
            elif self.path == f"{base}/certs":
                self._json(issuer.jwks())
            elif self.path == f"{base}/userinfo":
                issuer.userinfo_calls += 1
                token = self.headers.get("authorization", "").removeprefix("Bearer ")
                found = issuer.userinfo.get(token)
                if found is None:
                    self.send_error(401)
                else:
                    self._json(found)
            else:
                self.send_error(404)

        def _json(self, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server.RequestHandlerClass = Handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield issuer
    finally:
        server.shutdown()
        server.server_close()
