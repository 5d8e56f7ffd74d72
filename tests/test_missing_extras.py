"""A missing optional extra is one line and exit 2 from every command that needs it,
never a traceback. The library is hidden by a package of the same name on PYTHONPATH that
fails to import, as an environment without the extra would."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli


def blocked(tmp_path: Path, module: str) -> dict[str, str]:
    package = tmp_path / "blocked" / module
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f"raise ImportError(\"No module named '{module}'\")\n")
    return {"PYTHONPATH": str(package.parent)}


CASES = [
    ("pika", ("publish", "-", "--amqp", "amqp://guest:guest@127.0.0.1:1/%2F"), "capsync[amqp]"),
    ("redis", ("find", "--registry", "redis:redis://127.0.0.1:1/0"), "capsync[redis]"),
    ("psycopg", ("find", "--registry", "postgres:postgresql://127.0.0.1:1/x"), "capsync[postgres]"),
    ("pika", ("run", "--once", "--source", "amqp:amqp://127.0.0.1:1/%2F"), "capsync[amqp]"),
]


@pytest.mark.parametrize(
    ("module", "args", "hint"), CASES, ids=[f"{c[1][0]}-{c[0]}" for c in CASES]
)
def test_one_line_and_exit_2(tmp_path: Path, module: str, args: tuple[str, ...], hint: str):
    env = blocked(tmp_path, module)
    registry = ("--registry", f"sqlite:{tmp_path / 'r.db'}") if args[0] == "run" else ()
    result = run_cli(*args, *registry, input=b'{"id": "w"}', env=env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and hint in lines[0], result.stderr
