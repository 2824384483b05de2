"""Check that requirements.txt installs from binary wheels on every platform the README names.

    python bench/check_platforms.py [--requirements requirements.txt]

For each platform it evaluates the environment markers of requirements.txt as that platform
would (`pip download --platform` evaluates them for the machine it runs on, not the target),
then asks pip to resolve the chosen pins and all their dependencies with binary wheels only,
for CPython 3.11 on that platform, without installing anything. Exits non-zero, naming the
platform and pip's reason, if any platform fails. Needs the package registry.

Markers of the pins' own dependencies are still evaluated by pip for this machine; that is
pip's limit, and why the platforms' own installs stay the final word.
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PYTHON = "3.11"

# name: (pip --platform tags, marker environment). glibc 2.17 to 2.36 (Debian 12) for Linux; macOS 14
# because onnxruntime's arm64 wheels start there; pip widens a macOS tag to the versions below it.
PLATFORMS = {
    "Linux x86_64": (["manylinux2014_x86_64"] + [f"manylinux_2_{v}_x86_64" for v in range(17, 37)],
                     {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
                      "os_name": "posix"}),
    "macOS arm64": (["macosx_14_0_arm64"],
                    {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64",
                     "os_name": "posix"}),
    "Windows amd64": (["win_amd64"],
                      {"sys_platform": "win32", "platform_system": "Windows", "platform_machine": "AMD64",
                       "os_name": "nt"}),
}


def pins_for(requirements: list[Requirement], environment: dict) -> list[str]:
    """The requirements (as pip arguments, markers dropped) whose markers hold in environment."""
    env = {"python_version": PYTHON, "python_full_version": f"{PYTHON}.0", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", **environment}
    chosen = [Requirement(str(r)) for r in requirements if r.marker is None or r.marker.evaluate(env)]
    for r in chosen:
        r.marker = None  # pip would evaluate it for this machine again
    return [str(r) for r in chosen]


def read_requirements(path: Path) -> list[Requirement]:
    """The requirements of a requirements file, comments and blank lines left out."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def resolve(pins: list[str], tags: list[str]) -> tuple[list[str], str]:
    """(wheel file names, "") that pip would install for pins on tags, or ([], pip's last error line)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        platforms = [arg for tag in tags for arg in ("--platform", tag)]
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                               "--only-binary=:all:", "--python-version", PYTHON, "--implementation", "cp",
                               *platforms, "--target", str(Path(tmp) / "target"), "--report", str(report), *pins],
                              capture_output=True, text=True)
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
            return [], errors[-1] if errors else f"pip exited with status {done.returncode}"
        installs = json.loads(report.read_text())["install"]
    return [item["download_info"]["url"].rsplit("/", 1)[-1] for item in installs], ""


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requirements", type=Path, default=ROOT / "requirements.txt")
    args = p.parse_args()
    requirements = read_requirements(args.requirements)
    failed = []
    for name, (tags, environment) in PLATFORMS.items():
        pins = pins_for(requirements, environment)
        wheels, error = resolve(pins, tags)
        if error:
            failed.append(name)
            print(f"{name}: FAILED: {error}")
        else:
            tensorflow = next((w for w in wheels if w.startswith("tensorflow")), "no TensorFlow")
            print(f"{name}: {len(pins)} pins, {len(wheels)} wheels with their dependencies, all binary ({tensorflow})")
    if failed:
        sys.exit(f"error: {args.requirements.name} does not install on {', '.join(failed)}")


if __name__ == "__main__":
    main()
