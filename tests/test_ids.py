"""Ids that would change in silence are refused or read as they are (issue 30, class 6)."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from mrl.cli.main import app
from mrl.errors import MrlError
from mrl.index import MrlIndex
from mrl.index.ids import MAX_ID_LENGTH, check_ids

XB = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)


@pytest.mark.parametrize("ids, message", [
    (np.array([1, 2, 3, 2**63], np.uint64), "does not fit in a signed 64-bit id"),
    (["a", "b", "c", "d\x00"], "control character"),
    (["a", "b", "c", "\ud800x"], "lone surrogate"),
    (["a", "b", "c", "x" * (MAX_ID_LENGTH + 1)], f"ids have at most {MAX_ID_LENGTH}"),
    (["a", "b", "c", "tab\there"], "control character"),
])
def test_ids_that_would_change_in_silence_are_refused(ids, message, tmp_path):
    with pytest.raises(MrlError, match=message):
        check_ids(ids, 4)
    with pytest.raises(MrlError, match=message):
        MrlIndex.build(tmp_path / "i", XB, ids, first_stages=["int8@8"])
    assert not (tmp_path / "i" / "manifest.json").exists()


def test_ids_txt_is_read_as_written(tmp_path):
    np.save(tmp_path / "x.npy", XB)
    (tmp_path / "ids.txt").write_bytes("\ufeffa\n٣\n1_000\n7\n".encode())  # a BOM, Arabic-Indic 3, underscores
    runner = CliRunner()
    result = runner.invoke(app, ["index", "build", "-o", str(tmp_path / "i"), "--vectors", str(tmp_path / "x.npy"),
                                 "--ids", str(tmp_path / "ids.txt"), "--first-stage", "int8@8"])
    assert result.exit_code == 0, result.output
    index = MrlIndex.open(tmp_path / "i")
    assert index.manifest.id_kind == "str"
    found = index.keys(index.search(XB, 1, "int8@8:4,8:1").ids)
    assert [row[0] for row in found] == ["a", "٣", "1_000", "7"]
    # a string-id index takes all-numeric ids.txt as strings, for add and delete alike
    (tmp_path / "more.txt").write_text("7\n8\n")
    np.save(tmp_path / "y.npy", XB[:2] * -1)
    result = runner.invoke(app, ["index", "add", str(tmp_path / "i"), "--vectors", str(tmp_path / "y.npy"),
                                 "--ids", str(tmp_path / "more.txt")])
    assert result.exit_code == 0, result.output
    assert MrlIndex.open(tmp_path / "i").count == 5
    result = runner.invoke(app, ["index", "delete", str(tmp_path / "i"), "--ids", str(tmp_path / "more.txt")])
    assert result.exit_code == 0 and MrlIndex.open(tmp_path / "i").count == 3, result.output


def test_an_integer_index_refuses_ids_that_are_not_ascii_integers(tmp_path):
    MrlIndex.build(tmp_path / "i", XB, [1, 2, 3, 4], first_stages=["int8@8"])
    (tmp_path / "ids.txt").write_text("1_000\n")
    result = CliRunner().invoke(app, ["index", "delete", str(tmp_path / "i"), "--ids", str(tmp_path / "ids.txt")])
    assert result.exit_code == 2 and "ids.txt:1: '1_000' is not an integer id" in result.output
    assert MrlIndex.open(tmp_path / "i").count == 4
