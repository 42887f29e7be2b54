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
