"""OIDC bearer tokens: JWTs signed with a local RSA key, checked against a JWKS file beside the charter."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER, AUDIENCE = "https://login.quillo.example", "charter-billing"


@pytest.fixture
def oidc(project: Path) -> Any:
    from fastapi.testclient import TestClient

    from charter.runtime import Runtime
    from charter.server import ServerSettings, create_app

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")
    (project.parent / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    text = project.read_text()
    project.write_text(
        text.replace(
            "identity:\n  users_file: users.yaml\n",
            "identity:\n  users_file: users.yaml\n"
            f"  oidc: {{issuer: '{ISSUER}', audience: {AUDIENCE}, jwks: jwks.json}}\n",
        )
    )
    rt = Runtime.open(project)
    app = create_app(rt, ServerSettings(background_telemetry=False))

    def token(sub: str = "lena", *, signer: Any = key, **claims: Any) -> str:
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "exp": int(time.time()) + 300, **claims}
        return jwt.encode(body, signer, algorithm="RS256", headers={"kid": "k1"})

    with TestClient(app) as client:
        yield client, token, other
    rt.close()


def _me(client: Any, bearer: str) -> Any:
    return client.get("/api/me", headers={"Authorization": f"Bearer {bearer}"})


def test_valid_jwt_identifies_a_principal_of_the_charter(oidc: Any) -> None:
    client, token, _ = oidc
    r = _me(client, token("lena"))
    assert r.status_code == 200 and r.json()["id"] == "lena" and r.json()["roles"] == ["lead"]
    # roles come from the charter, never from the token
    assert _me(client, token("casey", roles=["operator"])).json()["roles"] == ["contractor"]
    assert (
        client.get("/api/audit/tail", headers={"Authorization": f"Bearer {token('casey')}"}).status_code
        == 403
    )


@pytest.mark.parametrize(
    "case",
    [
        "wrong_audience",
        "wrong_issuer",
        "expired",
        "other_key",
        "unknown_user",
        "alg_none",
        "hs256_with_public_key",
        "garbage",
    ],
)
def test_invalid_jwts_are_refused(oidc: Any, case: str) -> None:
    client, token, other = oidc
    bearer = {
        "wrong_audience": lambda: token(aud="someone-else"),
        "wrong_issuer": lambda: token(iss="https://evil.example"),
        "expired": lambda: token(exp=int(time.time()) - 10),
        "other_key": lambda: token(signer=other),
        "unknown_user": lambda: token("mallory"),
        "alg_none": lambda: jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "omar", "exp": int(time.time()) + 300},
            None,
            algorithm="none",
        ),
        "hs256_with_public_key": lambda: jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "omar", "exp": int(time.time()) + 300},
            "k" * 32,
            algorithm="HS256",
        ),
        "garbage": lambda: "aaa.bbb.ccc",
    }[case]()
    r = _me(client, bearer)
    assert r.status_code == 401, r.text
    assert r.json()["error"]["message"] == "invalid token"
