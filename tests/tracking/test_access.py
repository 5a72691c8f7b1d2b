"""`otdistill.tracking.access` without a server: the credentials' scope and the provisioning command's
refusals. The grants themselves are shown against a real server in tests/servers/test_registry_auth.py."""

from __future__ import annotations

import os

import pytest

from otdistill.tracking.access import (
    PASSWORD_ENV,
    PIPELINE_PASSWORD_ENV,
    USERNAME_ENV,
    Account,
    as_user,
    main,
)


def test_as_user_sets_the_login_only_inside_the_block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(USERNAME_ENV, "outer")
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    account = Account("otdistill-pipeline", "s3cret-password-123")
    with as_user(account):
        assert (os.environ[USERNAME_ENV], os.environ[PASSWORD_ENV]) == (account.username, account.password)
        with as_user(None):  # anonymous: neither variable
            assert USERNAME_ENV not in os.environ and PASSWORD_ENV not in os.environ
        assert os.environ[PASSWORD_ENV] == account.password
    # What was there before comes back, what was absent is absent again, also after an exception.
    with pytest.raises(RuntimeError), as_user(account):
        raise RuntimeError("boom")
    assert os.environ[USERNAME_ENV] == "outer" and PASSWORD_ENV not in os.environ
    assert account.password not in repr(account)


def test_provisioning_refuses_to_run_without_the_passwords_in_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in (USERNAME_ENV, PASSWORD_ENV, PIPELINE_PASSWORD_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(USERNAME_ENV, "admin")
    argv = ["--tracking-uri", "http://127.0.0.1:9", "--config", "configs/tiny.yaml"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert PASSWORD_ENV in err and PIPELINE_PASSWORD_ENV in err and USERNAME_ENV not in err
