"""Users who sign in with OIDC tokens, and what each may do with a service.

The issuer is a real one on loopback (tests/support/issuer.py: discovery, JWKS, userinfo),
its tokens signed with PyJWT. The rules are OSCAR's (pkg/utils/auth/
service_permissions.go, pkg/handlers/{list,read,update,delete}.go): a private service is
its owner's, a restricted one also its `allowed_users`', a public one everyone's; only the
owner and the admin change it; the admin's services are owned by `cluster_admin`.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from ondrop.settings import Settings
from tests.api.test_api import COPY
from tests.conftest import ADMIN, served
from tests.support.issuer import AUDIENCE, Issuer, serving_issuer

VO = "vo.example.eu"


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with serving_issuer() as served:
        yield served


@pytest.fixture
def settings(tmp_path: Path, issuer: Issuer) -> Settings:
    return Settings.load(
        {
            "data": tmp_path / "data",
            "admin_password": ADMIN.password,
            "concurrency": 2,
            "container_engine": "none",
            "gpus": "0",
            "oidc_issuers": issuer.url,
            "oidc_audience": AUDIENCE,
        },
        environ={},
    )


def as_user(base_url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def service(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "script": COPY,
        "input": [{"storage_provider": "minio", "path": f"{name}/in"}],
        **extra,
    }


def test_a_users_service_is_theirs(base_url: str, issuer: Issuer, api: httpx.Client) -> None:
    with (
        as_user(base_url, issuer.token("ana")) as ana,
        as_user(base_url, issuer.token("bob")) as bob,
    ):
        made = ana.post("/system/services", json=service("mine", owner="someone-else"))
        assert made.status_code == 201, made.text
        assert made.json()["owner"] == "ana"  # the platform sets it, whatever was sent
        assert [s["name"] for s in ana.get("/system/services").json()] == ["mine"]
        assert bob.get("/system/services").json() == []
        refused = bob.get("/system/services/mine")
        assert refused.status_code == 403 and "bob" in refused.json()["detail"]
        assert bob.delete("/system/services/mine").status_code == 403
        public = service("mine", visibility="public")
        assert bob.put("/system/services", json=public).status_code == 403
        # the owner changes it and keeps it; the admin sees it
        changed = ana.put("/system/services", json=public)
        assert changed.status_code == 204, changed.text
        assert api.get("/system/services/mine").json()["owner"] == "ana"
        # the admin changes it too, and the owner stays, whatever the body says
        by_admin = api.put("/system/services", json={**public, "owner": "cluster_admin"})
        assert by_admin.status_code == 204
        assert api.get("/system/services/mine").json()["owner"] == "ana"
        assert [s["name"] for s in bob.get("/system/services").json()] == ["mine"]
        assert bob.delete("/system/services/mine").status_code == 403  # seen, not changed
        assert ana.delete("/system/services/mine").status_code == 204


def test_the_admins_services_are_cluster_admins(api: httpx.Client) -> None:
    made = api.post("/system/services", json=service("admins"))
    assert made.status_code == 201 and made.json()["owner"] == "cluster_admin"


# Who may list, read and run which service: (visibility, allowed_users, vo) by caller.
MATRIX = [
    # service                                owner  listed bob  carol (in VO)  dan
    (("private", [], ""), {"ana": True, "bob": False, "carol": False, "dan": False}),
    (("restricted", ["bob"], ""), {"ana": True, "bob": True, "carol": False, "dan": False}),
    (("public", [], ""), {"ana": True, "bob": True, "carol": True, "dan": True}),
    (("public", [], VO), {"ana": True, "bob": False, "carol": True, "dan": False}),
    (
        ("restricted", ["bob", "carol"], VO),
        {"ana": True, "bob": False, "carol": True, "dan": False},
    ),
]


@pytest.mark.parametrize(("shape", "allowed"), MATRIX, ids=lambda v: str(v))
def test_who_may_list_read_and_run_a_service(
    base_url: str,
    issuer: Issuer,
    api: httpx.Client,
    shape: tuple[str, list[str], str],
    allowed: dict[str, bool],
) -> None:
    visibility, users, vo = shape
    vos = {"ana": (VO,), "carol": (VO,)}
    body = service("shared", visibility=visibility, allowed_users=users, vo=vo)
    with as_user(base_url, issuer.token("ana", vos=(VO,))) as ana:
        assert ana.post("/system/services", json=body).status_code == 201
    for user, may in allowed.items():
        with as_user(base_url, issuer.token(user, vos=vos.get(user, ()))) as client:
            listed = [s["name"] for s in client.get("/system/services").json()]
            assert (listed == ["shared"]) is may, (user, listed)
            assert client.get("/system/services/shared").status_code == (200 if may else 403)
            ran = client.post("/job/shared", content=b"hello")
            assert ran.status_code == (201 if may else 403), (user, ran.text)
            jobs = client.get("/system/logs/shared")
            assert jobs.status_code == (200 if may else 403), user
            # only the owner changes it, whoever may see it
            assert client.delete("/system/logs/shared").status_code == (
                204 if user == "ana" else 403
            )
    # the admin may do all, and the service's own token still runs it
    assert api.get("/system/services/shared").status_code == 200
    token = api.get("/system/services/shared").json()["token"]
    with as_user(base_url, token) as own:
        assert own.post("/job/shared", content=b"hi").status_code == 201
        assert own.get("/system/services").status_code == 401  # runs it, nothing else


def test_a_user_names_only_a_vo_they_are_in(base_url: str, issuer: Issuer) -> None:
    with as_user(base_url, issuer.token("ana", vos=("vo.other",))) as ana:
        refused = ana.post("/system/services", json=service("vo", vo=VO))
        assert refused.status_code == 403 and VO in refused.json()["detail"]
        assert ana.post("/system/services", json=service("vo", vo="vo.other")).status_code == 201


def test_groups_from_userinfo_when_the_token_has_none(base_url: str, issuer: Issuer) -> None:
    token = issuer.token("erin", vos=(VO,), in_userinfo=True)
    calls = issuer.userinfo_calls
    with as_user(base_url, token) as erin:
        assert erin.post("/system/services", json=service("erins", vo=VO)).status_code == 201
        assert erin.get("/system/services/erins").json()["vo"] == VO
    assert issuer.userinfo_calls == calls + 1  # asked once, then kept until it expires


@pytest.mark.parametrize(
    ("why", "make", "said"),
    [
        ("expired", lambda i: i.token("ana", lifetime=-120), "expired"),
        ("wrong audience", lambda i: i.token("ana", audience="another-app"), "audience"),
        (
            "another key",
            lambda i: i.token(
                "ana", key=rsa.generate_private_key(public_exponent=65537, key_size=2048)
            ),
            "signature",
        ),
        ("another issuer", lambda i: i.token("ana", issuer="https://evil.example"), "issuer"),
        ("not a JWT", lambda i: "not-a-token", "not an OIDC token"),
    ],
)
def test_tokens_the_platform_does_not_take_are_401(
    base_url: str, issuer: Issuer, why: str, make: Any, said: str
) -> None:
    with as_user(base_url, make(issuer)) as client:
        refused = client.get("/system/services")
    assert refused.status_code == 401, why
    assert said in refused.json()["detail"], refused.json()


def test_a_token_signed_with_a_shared_secret_is_refused(base_url: str, issuer: Issuer) -> None:
    import jwt

    forged = jwt.encode(
        {"iss": issuer.url, "sub": "ana", "aud": AUDIENCE, "exp": 2**31},
        "a shared secret of thirty-two bytes or more",
        algorithm="HS256",
        headers={"kid": "test-key-1"},
    )
    with as_user(base_url, forged) as client:
        refused = client.get("/system/services")
    assert refused.status_code == 401 and "HS256" in refused.json()["detail"]


class Bundled:
    """Stands in for the bundled object store, whose keys /system/config shows."""

    def provider_config(self) -> dict[str, Any]:
        keys = {"access_key": "AKIA-ADMIN", "secret_key": "the-admins-secret"}
        return {"endpoint": "http://127.0.0.1:8333", "verify": False, **keys, "region": ""}


def test_users_see_the_config_without_the_stores_keys(
    base_url: str, issuer: Issuer, api: httpx.Client, platform: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(platform, "object_store", Bundled())
    assert api.get("/system/config").json()["minio_provider"]["secret_key"] == "the-admins-secret"
    with as_user(base_url, issuer.token("ana")) as ana:
        assert ana.get("/system/info").status_code == 200
        config = ana.get("/system/config").json()
        assert config["minio_provider"]["endpoint"] == "http://127.0.0.1:8333"
        assert (config["minio_provider"]["access_key"], config["minio_provider"]["secret_key"]) == (
            "",
            "",
        )
        # the admin's endpoints stay the admin's
        assert ana.put("/system/config", json={"allowed_image_repositories": []}).status_code == 401
        assert ana.get("/system/status").status_code == 401


def test_without_issuers_a_bearer_on_system_is_refused(settings: Settings) -> None:
    with served(settings, oidc_issuers="") as url, as_user(url, "anything") as client:
        refused = client.get("/system/services")
    assert refused.status_code == 401
    assert "ONDROP_OIDC_ISSUERS is empty" in refused.json()["detail"]


def test_groups_admit_only_their_members(settings: Settings, issuer: Issuer) -> None:
    with served(settings, oidc_groups=VO) as url:
        with as_user(url, issuer.token("out")) as outsider:
            refused = outsider.get("/system/services")
            assert refused.status_code == 403 and VO in refused.json()["detail"]
        with as_user(url, issuer.token("member", vos=(VO,))) as member:
            made = member.post("/system/services", json=service("in-vo"))
            # a user's service without a vo gets the platform's first group they are in
            assert made.status_code == 201 and made.json()["vo"] == VO


def test_an_issuer_url_must_be_https_off_loopback() -> None:
    from ondrop.errors import DefinitionError

    with pytest.raises(DefinitionError, match="not an https URL"):
        Settings.load({"oidc_issuers": "http://aai.example.org/realms/egi"}, environ={})
    assert Settings.load(
        {"oidc_issuers": "https://aai.egi.eu/auth/realms/egi, http://127.0.0.1:9/x"}, environ={}
    ).issuers == ["https://aai.egi.eu/auth/realms/egi", "http://127.0.0.1:9/x"]


def test_oscar_pythons_oidc_token_path(base_url: str, issuer: Issuer, api: httpx.Client) -> None:
    from oscar_python import client as client_module

    script = 'tr a-z A-Z < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/out"\n'
    ana = client_module.Client(
        {
            "cluster_id": "ondrop",
            "endpoint": base_url,
            "oidc_token": issuer.token("ana"),
            "ssl": False,
        }
    )
    made = ana.create_service({"name": "shout", "script": script})
    assert made.status_code == 201, made.text
    assert [s["name"] for s in ana.list_services().json()] == ["shout"]
    assert ana.get_service("shout").json()["owner"] == "ana"
    answer = ana.run_service("shout", input="hello")
    assert answer.status_code == 200 and base64.b64decode(answer.text) == b"HELLO"
    assert ana.remove_service("shout").status_code == 204
    assert api.get("/system/services").json() == []


def test_a_users_service_reaches_only_what_is_theirs(
    base_url: str, issuer: Issuer, seaweedfs: Any
) -> None:
    ana, bob = as_user(base_url, issuer.token("ana")), as_user(base_url, issuer.token("bob"))
    with ana, bob:
        s3 = {"minio": {"anas": seaweedfs.provider_config()}}
        on_s3 = [{"storage_provider": "minio.anas", "path": "anas3/in"}]
        made = ana.post("/system/services", json=service("anas", storage_providers=s3))
        assert made.status_code == 201, made.text
        made = ana.post("/system/services", json=service("s3", input=on_s3, storage_providers=s3))
        assert made.status_code == 201, made.text
        in_anas = [{"storage_provider": "minio", "path": "anas/in"}]
        refusals = {
            "another's bucket": service("spy", input=in_anas),
            "another's provider": service(
                "spy", input=[{"storage_provider": "minio.anas", "path": "x/in"}]
            ),
            "another's provider id": service("spy", storage_providers=s3),
            "a host folder": service(
                "spy", storage_providers={"local": {"mine": {"path": "/etc"}}}
            ),
        }
        for why, body in refusals.items():
            refused = bob.post("/system/services", json=body)
            assert refused.status_code == 403, (why, refused.text)
        assert bob.get("/system/services").json() == []
        # what another user may not change through /system/apply nor reprocess either
        applied = bob.post("/system/apply", json={"services": [service("anas")]})
        assert applied.status_code == 403
        assert bob.post("/system/services/anas/reprocess").status_code == 403
        assert ana.get("/system/services/anas").json()["script"] == COPY


def test_no_user_is_the_admins_owner(base_url: str, issuer: Issuer) -> None:
    with as_user(base_url, issuer.token("cluster_admin")) as client:
        refused = client.get("/system/services")
    assert refused.status_code == 401 and "the admin" in refused.json()["detail"]


def test_a_key_of_another_kind_than_the_tokens_algorithm_is_401_not_500(
    base_url: str, issuer: Issuer
) -> None:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    forged = jwt.encode(
        {"iss": issuer.url, "sub": "ana", "aud": AUDIENCE, "exp": 2**31},
        ec.generate_private_key(ec.SECP256R1()),
        algorithm="ES256",
        headers={"kid": "test-key-1"},  # the issuer's RSA key
    )
    with as_user(base_url, forged) as client:
        refused = client.get("/system/services")
    assert refused.status_code == 401, refused.text


def test_an_issuer_that_cannot_be_reached_is_503(settings: Settings, issuer: Issuer) -> None:
    gone = "http://127.0.0.1:9/realms/gone"  # the discard port: nothing listens
    with (
        served(settings, oidc_issuers=gone) as url,
        as_user(url, issuer.token("ana", issuer=gone)) as client,
    ):
        first, again = client.get("/system/services"), client.get("/system/services")
    for answer in (first, again):  # the second from the failure remembered
        assert answer.status_code == 503 and "Retry-After" in answer.headers
        assert "discovery document" in answer.json()["detail"]


def test_a_users_buckets_are_theirs_as_oscar_shows_them(base_url: str, issuer: Issuer) -> None:
    ana, bob = as_user(base_url, issuer.token("ana")), as_user(base_url, issuer.token("bob"))
    with ana, bob:
        made = ana.post("/system/buckets", json={"bucket_name": "anas-data"})
        assert made.status_code == 201 and made.json()["owner"] == "ana"
        assert [b["bucket_name"] for b in ana.get("/system/buckets").json()] == ["anas-data"]
        assert bob.get("/system/buckets").json() == []
        assert bob.get("/system/buckets/anas-data").status_code == 403
        assert bob.delete("/system/buckets/anas-data").status_code == 403
        down = {"object_key": "a.txt", "operation": "download"}
        assert bob.post("/system/buckets/anas-data/presign", json=down).status_code == 403
        # another's bucket is not a user's service's either
        spy = service("spy", input=[{"storage_provider": "minio", "path": "anas-data/in"}])
        assert bob.post("/system/services", json=spy).status_code == 403
        # restricted to bob: he reads it and may write to it; public: others read it only
        shared = {"bucket_name": "anas-data", "visibility": "restricted", "allowed_users": ["bob"]}
        assert ana.put("/system/buckets", json=shared).status_code == 204
        assert bob.put("/system/buckets", json=shared).status_code == 403  # not his
        up = {"object_key": "a.txt", "operation": "upload"}
        url = bob.post("/system/buckets/anas-data/presign", json=up).json()["url"]
        assert httpx.put(url, content=b"from bob").status_code in (200, 201, 204)
        assert bob.get("/system/buckets/anas-data").json()["objects"][0]["object_name"] == "a.txt"
        public = {"bucket_name": "anas-data", "visibility": "public"}
        assert ana.put("/system/buckets", json=public).status_code == 204
        with as_user(base_url, issuer.token("carol")) as carol:
            assert carol.post("/system/buckets/anas-data/presign", json=down).status_code == 200
            assert carol.post("/system/buckets/anas-data/presign", json=up).status_code == 403
        # a user's buckets are on the platform's store only
        other = bob.get("/system/buckets", params={"provider": "local.default"})
        assert other.status_code == 403
        assert ana.delete("/system/buckets/anas-data").status_code == 204


def test_every_route_of_a_service_holds_to_its_rules(base_url: str, issuer: Issuer) -> None:
    ana, bob = as_user(base_url, issuer.token("ana")), as_user(base_url, issuer.token("bob"))
    with ana, bob:
        assert ana.post("/system/services", json=service("anas")).status_code == 201
        job = ana.post("/job/anas", content=b"hello").json()["job_id"]
        reads = [
            "/system/services/anas/deployment",
            "/system/services/anas/deployment/logs",
            f"/system/jobs/anas/{job}",
            f"/system/logs/anas/{job}",
        ]
        changes = [
            ("post", f"/system/jobs/anas/{job}/cancel"),
            ("post", f"/system/jobs/anas/{job}/retry"),
            ("post", "/system/jobs/anas/retry"),
            ("delete", f"/system/logs/anas/{job}"),
            ("post", "/system/services/anas/reprocess"),
        ]
        for path in reads:
            assert bob.get(path).status_code == 403, path
            assert ana.get(path).status_code == 200, path
        for method, path in changes:
            assert bob.request(method, path).status_code == 403, path
        # the owner's own: answered by what the job's state allows, never a 403
        for method, path in changes:
            assert ana.request(method, path).status_code in (200, 204, 409), path
        # taking a name that is another's is a conflict, not a takeover
        taken = bob.post("/system/services", json=service("anas", script="echo mine"))
        assert taken.status_code == 409
        assert ana.get("/system/services/anas").json()["script"] == COPY


def test_a_token_naming_a_key_the_issuer_does_not_have_is_401(
    base_url: str, issuer: Issuer
) -> None:
    import jwt

    forged = jwt.encode(
        {"iss": issuer.url, "sub": "ana", "aud": AUDIENCE, "exp": 2**31},
        rsa.generate_private_key(65537, 2048),
        algorithm="RS256",
        headers={"kid": "a-key-it-never-had"},
    )
    with as_user(base_url, forged) as client:
        refused = client.get("/system/services")
    assert refused.status_code == 401 and "signing key" in refused.json()["detail"]


def test_what_opens_the_platform_is_kept_from_an_exposed_server(issuer: Issuer) -> None:
    """lets_in decides which Authorization the exposed proxy drops: every credential of
    the platform's, valid or not, and nothing a caller holds for the server itself."""
    from starlette.requests import HTTPConnection

    from ondrop.api.auth import Credentials, lets_in
    from ondrop.api.oidc import SignIn
    from ondrop.fdl.models import Service

    web = Service.model_validate({"name": "web", "script": "x", "token": "a" * 64})
    admin = Credentials("admin", "secret")
    signin = SignIn([issuer.url], AUDIENCE)

    def dropped(header: str) -> bool:
        scope = {"type": "http", "headers": [(b"authorization", header.encode())]}
        return lets_in(HTTPConnection(scope), admin, signin, [web])

    def basic(user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    assert dropped(basic("admin", "secret"))
    assert dropped(basic("web", "a" * 64))  # OSCAR's set_auth credentials
    assert dropped("Bearer " + "a" * 64)  # the service's token
    assert dropped("Bearer " + issuer.token("ann"))
    assert dropped("Bearer " + issuer.token("ann", lifetime=-60))  # expired: still hers
    assert not dropped(basic("admin", "guess"))  # not the admin's: a server's own
    assert not dropped(basic("web", "b" * 64))
    assert not dropped("Bearer " + "b" * 64)
    assert not dropped("Bearer not-a-jwt")
    assert not dropped("Token jupyter-token")
    assert not dropped("Basic !!")  # not even basic
