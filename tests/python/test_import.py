"""The package imports from the build tree, C core included."""
import evring


def test_the_c_core_is_loaded():
    assert evring._evring.__name__ == "evring._evring"
