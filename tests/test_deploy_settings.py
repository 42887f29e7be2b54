"""Production settings pass Django's deployment checks."""

import os
import subprocess
import sys

from cryptography.fernet import Fernet


def test_check_deploy_is_clean_with_production_settings():
    env = {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": "x" * 30 + Fernet.generate_key().decode(),
        "POOLER_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": "pooler.example.com",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_encryption_keys():
    env = {**os.environ, "DEBUG": "false", "SECRET_KEY": "y" * 60, "POOLER_ENCRYPTION_KEYS": ""}
    result = subprocess.run([sys.executable, "manage.py", "check"], capture_output=True, text=True, env=env)
    assert result.returncode != 0 and "POOLER_ENCRYPTION_KEYS" in result.stderr


def test_two_factor_sign_in_is_required_by_default_in_production():
    def require_2fa(debug: str) -> str:
        env = {key: value for key, value in os.environ.items() if key != "POOLER_REQUIRE_2FA"}
        env |= {"DEBUG": debug, "SECRET_KEY": "z" * 60, "POOLER_ENCRYPTION_KEYS": Fernet.generate_key().decode()}
        command = "from django.conf import settings; print(settings.POOLER_REQUIRE_2FA)"
        result = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", command], capture_output=True, text=True, env=env
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.split()[-1]  # after the shell's own "objects imported" line

    assert require_2fa("false") == "True"
    assert require_2fa("true") == "False"  # a developer's machine signs in with a password alone
