"""bench/check_platforms.py: markers chosen per platform, and a pin without a macOS wheel caught (asks the registry)."""
import sys

import pytest
from packaging.requirements import Requirement

from conftest import ROOT, run_script

sys.path.insert(0, str(ROOT / "bench"))
import check_platforms  # noqa: E402


def test_each_platform_gets_the_tensorflow_its_markers_choose():
    requirements = check_platforms.read_requirements(ROOT / "requirements.txt")
    chosen = {name: [pin for pin in check_platforms.pins_for(requirements, environment) if "tensorflow" in pin]
              for name, (_, environment) in check_platforms.PLATFORMS.items()}
    assert chosen == {"Linux x86_64": ["tensorflow-cpu==2.21.0"], "macOS arm64": ["tensorflow==2.21.0"],
                      "Windows amd64": ["tensorflow-cpu==2.21.0"]}
    assert all(Requirement(pin).marker is None for pin in check_platforms.pins_for(requirements, {}))


@pytest.mark.slow
@pytest.mark.network
def test_a_pin_without_a_macos_wheel_fails_the_check(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text('tensorflow-cpu==2.21.0\nsoxr==1.1.0; sys_platform == "win32"  # one platform only\n')
    result = run_script("bench/check_platforms.py", "--requirements", requirements, timeout=300)
    assert result.returncode != 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Linux x86_64: 1 pins, ") and "all binary (tensorflow_cpu-2.21.0-" in lines[0]
    assert lines[1] == "macOS arm64: FAILED: ERROR: No matching distribution found for tensorflow-cpu==2.21.0"
    assert lines[2].startswith("Windows amd64: 2 pins, ")
    assert result.stderr.strip() == f"error: {requirements.name} does not install on macOS arm64"
