"""The one rule of a registry's steady-cycle reuse (daemon/registry/base.py:KeptRead):
its last full read is handed back only at the same version, and never once it is older
than REREAD_SECONDS, whatever the version says. The registries' own tests prove that a
write moves each one's version (test_registry_contract.py, behind steady cycles)."""

from __future__ import annotations

from daemon.registry.base import REREAD_SECONDS, KeptRead, Snapshot
from tests.fake_clock import Clock


def test_the_kept_read_is_handed_back_at_its_version_only_and_never_past_the_bound() -> None:
    clock, read = Clock(1000.0), Snapshot(owned={})
    kept = KeptRead(clock)
    assert not kept.fresh() and kept.get(7) is None  # nothing read yet
    kept.keep(7, kept.start(), read)
    assert kept.fresh() and kept.get(7) is read
    assert kept.get(8) is None  # the registry was written since
    assert kept.get(None) is None  # the version could not be told
    clock.now += REREAD_SECONDS - 1
    assert kept.get(7) is read
    clock.now += 1
    assert not kept.fresh() and kept.get(7) is None  # read in full, whatever the version


def test_a_read_whose_version_moved_while_it_ran_is_not_kept_and_a_write_forgets() -> None:
    kept = KeptRead(Clock(1000.0))
    kept.keep(None, kept.start(), Snapshot(owned={}))
    assert not kept.fresh() and kept.get(None) is None
    kept.keep((1, 2), kept.start(), Snapshot(owned={}))
    kept.forget()
    assert kept.get((1, 2)) is None
