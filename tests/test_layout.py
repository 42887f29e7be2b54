"""Who may import whom: `accounts/` owns the accounts' lifecycle and knows nothing of the runtime in `proxy/`."""

import ast
from pathlib import Path

ACCOUNTS = Path(__file__).resolve().parents[1] / "accounts"


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_accounts_never_imports_proxy():
    offenders = {
        str(path.relative_to(ACCOUNTS.parent)): sorted(m for m in imported_modules(path) if m.split(".")[0] == "proxy")
        for path in ACCOUNTS.rglob("*.py")
    }
    assert {path: modules for path, modules in offenders.items() if modules} == {}
