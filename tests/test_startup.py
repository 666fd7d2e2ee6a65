"""gunshot_core.startup: imports with the garbage collector paused, frozen afterwards when asked."""

import gc

import pytest

from gunshot_core import startup


@pytest.fixture(autouse=True)
def _collector_restored():
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    if enabled:
        gc.enable()
    else:
        gc.disable()


def test_collector_is_paused_inside_and_restored_after():
    gc.enable()
    frozen = gc.get_freeze_count()  # earlier tests may have run commands, which freeze
    with startup.imports_without_gc():
        assert not gc.isenabled()
        kept = [[i] for i in range(1000)]  # noqa: F841
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen  # no freeze unless asked


def test_nested_blocks_leave_the_collector_to_the_outermost():
    gc.enable()
    with startup.imports_without_gc():
        with startup.imports_without_gc():
            pass
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_disabled_collector_stays_disabled():
    gc.disable()
    with startup.imports_without_gc(freeze=True):
        pass
    assert not gc.isenabled()


def test_freeze_takes_existing_objects_out_of_collections():
    gc.enable()
    gc.unfreeze()
    with startup.imports_without_gc(freeze=True):
        kept = [[i] for i in range(1000)]  # noqa: F841 - objects created inside the block
    assert gc.isenabled()
    assert gc.get_freeze_count() >= 1000
    gc.unfreeze()
    startup.freeze_before_exit()
    assert gc.get_freeze_count() >= 1000


def test_collector_is_restored_when_an_import_fails():
    gc.enable()
    with pytest.raises(ModuleNotFoundError):
        with startup.imports_without_gc(freeze=True):
            import gunshot_core_no_such_module  # noqa: F401
    assert gc.isenabled()
