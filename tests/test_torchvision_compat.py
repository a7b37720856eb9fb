"""The torchvision fix: makes `import timm` work on CPU torch, and is a no-op elsewhere."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Load the compat module by path: importing the cvt package would import timm, which needs the real torchvision.
LOAD_FIX = f"""
import importlib.util
_spec = importlib.util.spec_from_file_location("compat", {str(ROOT / "cvt" / "_torchvision_compat.py")!r})
compat = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(compat)
ensure_torchvision = compat.ensure_torchvision
"""


def _run(code: str, extra_path: Path | None = None) -> subprocess.CompletedProcess:
    prefix = f"import sys; sys.path.insert(0, {str(extra_path)!r})\n" if extra_path else ""
    return subprocess.run([sys.executable, "-c", prefix + textwrap.dedent(code)], capture_output=True,
                          text=True, cwd=ROOT)


def test_importing_the_project_makes_timm_usable():
    out = _run("""
        import cvt, nas, search_spaces
        import timm, torchvision.transforms.v2, timm.optim, timm.data
        from timm.layers import DropPath, trunc_normal_
        from cvt._torchvision_compat import ensure_torchvision
        m = timm.create_model("resnet18", num_classes=3)
        print("ok", ensure_torchvision())
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok", "False"]  # a second call finds torchvision importable: no-op


def _fake_torchvision(tmp_path: Path, body: str) -> Path:
    pkg = tmp_path / "torchvision"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(body)
    return tmp_path


def test_noop_where_torchvision_imports_normally(tmp_path):
    path = _fake_torchvision(tmp_path, "LOADED = True\n")
    out = _run(LOAD_FIX + """
import torchvision
print(ensure_torchvision(), torchvision.LOADED)
""", path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]


def test_unrelated_runtime_errors_are_not_swallowed(tmp_path):
    path = _fake_torchvision(tmp_path, "raise RuntimeError('something else broke')\n")
    out = _run(LOAD_FIX + "ensure_torchvision()", path)
    assert out.returncode != 0
    assert "something else broke" in out.stderr


def test_patch_applies_for_the_missing_operator(tmp_path):
    # A stand-in with torchvision's failure mode: it needs torchvision::nms to exist at import time.
    path = _fake_torchvision(tmp_path, textwrap.dedent("""
        import torch
        try:
            torch.ops.torchvision.nms.default
        except (AttributeError, RuntimeError):
            raise RuntimeError("operator torchvision::nms does not exist")
    """))
    out = _run(LOAD_FIX + """
print(ensure_torchvision())
import torchvision
""", path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True"]
