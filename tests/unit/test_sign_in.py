"""Signing in on the embedded defaults (SQLite): parallel sign-ins all succeed, and a key from the
environment signs and verifies alike."""

from __future__ import annotations

import threading

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.registration import domain
from services.registration.app import create_app
from services.registration.bootstrap import bootstrap
from shared.config import load_settings
from shared.migrations import upgrade

ORGANISERS = [(f"panitia{i}@kaltaraprov.go.id", f"rahasia-panitia-{i:04d}") for i in range(8)]


def test_parallel_sign_ins_on_sqlite_all_get_their_token(registration_app):
    runtime = registration_app.extensions["labinov"]
    with runtime.unit_of_work() as uow:
        for email, password in ORGANISERS:
            domain.create_account(uow, "organiser", email, password)
        uow.commit()
    answers: list[int] = []
    start = threading.Barrier(len(ORGANISERS) * 2)

    def sign_in(email: str, password: str) -> None:
        client = registration_app.test_client()
        start.wait()
        answers.append(
            client.post("/registration/api/v1/auth/token", json={"email": email, "password": password}).status_code
        )

    def guess_wrong(email: str) -> None:  # other writers at the same time
        client = registration_app.test_client()
        start.wait()
        answers.append(
            client.post("/registration/api/v1/auth/token", json={"email": email, "password": "salah"}).status_code
        )

    threads = [threading.Thread(target=sign_in, args=pair) for pair in ORGANISERS]
    threads += [threading.Thread(target=guess_wrong, args=(f"tamu{i}@example.go.id",)) for i in range(len(ORGANISERS))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(answers) == [200] * len(ORGANISERS) + [401] * len(ORGANISERS)


def test_a_signing_key_from_the_environment_verifies_its_own_tokens(tmp_path):
    pem = (
        Ed25519PrivateKey.generate()
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    settings = load_settings("registration", {"LABINOV_DATA_DIR": str(tmp_path), "LABINOV_JWT_PRIVATE_KEY": pem})
    runtime = bootstrap(settings)
    upgrade(runtime)
    with runtime.unit_of_work() as uow:
        domain.create_account(uow, "organiser", *ORGANISERS[0])
        uow.commit()
    client = create_app(runtime).test_client()

    token = client.post(
        "/registration/api/v1/auth/token", json={"email": ORGANISERS[0][0], "password": ORGANISERS[0][1]}
    ).get_json()["access_token"]
    listed = client.get("/registration/api/v1/registrations/nope", headers={"Authorization": f"Bearer {token}"})

    assert listed.status_code == 404  # past the token check: the registration simply does not exist
    assert not (tmp_path / "keys" / "jwt-private.pem").exists()  # the environment's key, not a generated one
