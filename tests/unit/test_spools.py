"""One spool per gateway process: which spools have no owner when the gateway runs fewer processes, and how
process 0 adopts them without losing or repeating a record."""

from __future__ import annotations

from pathlib import Path

from serving.gateway.spool import Spool
from serving.gateway.spools import adopt, orphaned, spool_dir, spool_root
from tests.unit.test_spool import drain, records


def left_behind(data_dir: Path, index: int, start: int, n: int) -> None:
    """What gateway process `index` of an earlier run left in its spool."""
    spool = Spool(spool_dir(data_dir, index), 1 << 20)
    spool.append(records(n, start=start))
    spool.close()


def test_each_process_has_its_own_folder(tmp_path: Path) -> None:
    assert spool_dir(tmp_path, 0) != spool_dir(tmp_path, 1)
    assert spool_dir(tmp_path, 1).parent == spool_root(tmp_path)


def test_indices_beyond_the_process_count_are_orphans_the_rest_are_not(tmp_path: Path) -> None:
    for index in (0, 1, 2, 10):
        left_behind(tmp_path, index, 0, 1)
    (spool_root(tmp_path) / "notes").mkdir()
    assert orphaned(tmp_path, 4) == [spool_dir(tmp_path, 10)]
    assert orphaned(tmp_path, 1) == [spool_dir(tmp_path, 1), spool_dir(tmp_path, 2), spool_dir(tmp_path, 10)]
    assert orphaned(tmp_path / "never-ran", 1) == []


def test_a_spool_from_before_per_process_folders_is_an_orphan_first(tmp_path: Path) -> None:
    left_behind(tmp_path, 3, 0, 1)
    legacy = Spool(spool_root(tmp_path), 1 << 20)
    legacy.append(records(2))
    legacy.close()
    assert orphaned(tmp_path, 2) == [spool_root(tmp_path), spool_dir(tmp_path, 3)]


def test_process_0_adopts_every_record_of_the_orphans_in_order_and_they_go(tmp_path: Path) -> None:
    left_behind(tmp_path, 0, 0, 3)
    left_behind(tmp_path, 1, 3, 4)
    left_behind(tmp_path, 2, 7, 600)  # more than one batch
    own = Spool(spool_dir(tmp_path, 0), 1 << 20)
    moved = [adopt(own, orphan) for orphan in orphaned(tmp_path, 1)]
    assert moved == [4, 600]
    assert drain(own) == records(607)
    assert orphaned(tmp_path, 1) == []
    assert not spool_dir(tmp_path, 1).exists() and not spool_dir(tmp_path, 2).exists()


def test_what_does_not_fit_stays_in_the_orphan_for_the_next_start(tmp_path: Path) -> None:
    left_behind(tmp_path, 1, 0, 10)
    frame = len(records(1)[0].encode())
    own = Spool(spool_dir(tmp_path, 0), max_bytes=4 * frame + frame // 2)
    assert adopt(own, spool_dir(tmp_path, 1)) == 4
    assert drain(own) == records(4)
    assert adopt(own, spool_dir(tmp_path, 1)) == 4
    assert adopt(own, spool_dir(tmp_path, 1)) == 0  # still full: nothing moves, nothing is lost
    assert drain(own) == records(4, start=4)
    assert adopt(own, spool_dir(tmp_path, 1)) == 2
    assert drain(own) == records(2, start=8)
    assert orphaned(tmp_path, 1) == []


def test_an_orphan_another_process_still_holds_is_left_alone(tmp_path: Path) -> None:
    left_behind(tmp_path, 1, 0, 2)
    still_running = Spool(spool_dir(tmp_path, 1), 1 << 20)
    own = Spool(spool_dir(tmp_path, 0), 1 << 20)
    assert adopt(own, spool_dir(tmp_path, 1)) == 0
    assert own.pending == 0 and still_running.pending == 2
    still_running.close()


def test_records_set_aside_for_a_person_are_kept(tmp_path: Path) -> None:
    left_behind(tmp_path, 1, 0, 1)
    (spool_dir(tmp_path, 1) / "refused.jsonl").write_text("{}\n")
    own = Spool(spool_dir(tmp_path, 0), 1 << 20)
    assert adopt(own, spool_dir(tmp_path, 1)) == 1
    assert [path.name for path in spool_dir(tmp_path, 1).iterdir()] == ["refused.jsonl"]
