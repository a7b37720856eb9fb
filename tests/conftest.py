"""What several test modules share: the repository root, the tiny CvT space, and loading a benchmark script."""
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_SPACE = ROOT / "tests" / "data" / "tiny-cvt-space.yaml"  # 320 CvT members, 2.6-7.0 MMACs at 64x64


def load_script(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_space() -> str:
    """The tiny space's path: each proxy training of its members takes about a second."""
    return str(TINY_SPACE)
