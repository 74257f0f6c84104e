"""The migration head read without Alembic (every start and /readyz need it) agrees with
Alembic's, and anything but a plain chain is left to Alembic; a database at head is not
migrated again."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipam.storage import database
from ipam.storage.database import Database, _alembic_config, _linear_head, head_revision, migrate


def test_head_matches_alembics() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config())  # type: ignore[arg-type]
    assert _linear_head() == script.get_current_head() == head_revision()


def revision(path: Path, rev: str, down: str | tuple[str, ...] | None, **extra: object) -> None:
    lines = [f"revision: str = {rev!r}", f"down_revision = {down!r}"]
    lines += [f"{k} = {v!r}" for k, v in extra.items()]
    (path / f"{rev}_x.py").write_text("\n".join(lines) + "\n")


def test_a_linear_chain_in_any_file_order(tmp_path: Path) -> None:
    revision(tmp_path, "b2", "a1")
    revision(tmp_path, "a1", None)
    revision(tmp_path, "c3", "b2")
    (tmp_path / "__init__.py").write_text("revision = 'nope'\n")
    (tmp_path / "notes.txt").write_text("revision = 'nope'\n")
    assert _linear_head(tmp_path) == "c3"


@pytest.mark.parametrize("case", ["branch", "merge", "labels", "depends", "no-revision",
                                  "unknown-parent", "computed"])
def test_anything_else_is_left_to_alembic(tmp_path: Path, case: str) -> None:
    revision(tmp_path, "a1", None)
    if case == "branch":
        revision(tmp_path, "b2", "a1")
        revision(tmp_path, "b3", "a1")
    elif case == "merge":
        revision(tmp_path, "b2", "a1")
        revision(tmp_path, "b3", "a1")
        revision(tmp_path, "c4", ("b2", "b3"))
    elif case == "labels":
        revision(tmp_path, "b2", "a1", branch_labels=("x",))
    elif case == "depends":
        revision(tmp_path, "b2", "a1", depends_on="a1")
    elif case == "no-revision":
        (tmp_path / "b2_x.py").write_text("down_revision = 'a1'\n")
    elif case == "unknown-parent":
        revision(tmp_path, "b2", "zz")
    else:
        (tmp_path / "b2_x.py").write_text("revision = 'b' + '2'\ndown_revision = 'a1'\n")
    assert _linear_head(tmp_path) is None


async def test_migrate_at_head_leaves_alembic_alone(db: Database,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    assert await db.schema_revision() == head_revision()

    def no_alembic(*_: object) -> object:
        raise AssertionError("Alembic was configured for a database already at head")

    monkeypatch.setattr(database, "_alembic_config", no_alembic)
    await migrate(db)
    assert await db.schema_revision() == head_revision()
