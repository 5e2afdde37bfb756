"""Build the Lambda layers into build/layers (arm64, Python 3.12 unless told otherwise).

    python scripts/build_layers.py                   # what `cdk synth` / `cdk deploy` need
    python scripts/build_layers.py --out DIR --platform manylinux2014_x86_64 --python-version 3.11
    python scripts/build_layers.py --lock            # re-pin requirements/lambda.txt

The logic lives in infra/packaging/ (layers.py, bytecode.py); this file is its command
line.
Needs PyPI (uv installs the wheels, pip re-pins the lock) and npm (the Amazon RDS CA
bundle comes from a checksum-pinned npm tarball).
"""

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.packaging import bytecode  # noqa: E402
from infra.packaging.layers import (  # noqa: E402
    DEFAULT_OUT,
    LAMBDA_PIP_PLATFORM,
    LAMBDA_PYTHON_VERSION,
    REPO_ROOT,
    REQUIREMENTS,
    REQUIREMENTS_IN,
    LayersNotBuilt,
    build,
    directory_size,
    lock,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="build_layers",
        description="Build the Lambda layers (dependencies, common code) without Docker.",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="default: build/layers")
    parser.add_argument("--platform", default=LAMBDA_PIP_PLATFORM, help="pip --platform tag")
    parser.add_argument("--python-version", default=LAMBDA_PYTHON_VERSION)
    parser.add_argument("--requirements", type=Path, default=REQUIREMENTS)
    parser.add_argument(
        "--compile-with",
        metavar="PATH",
        help="the Python that compiles the layers to bytecode (default: this one, or "
        "python<version> on PATH, when its version is the runtime's)",
    )
    parser.add_argument(
        "--lock",
        action="store_true",
        help=f"re-resolve {REQUIREMENTS_IN.name} into {REQUIREMENTS.name} instead of building",
    )
    args = parser.parse_args(argv)
    try:
        if args.lock:
            pins = lock()
            print(f"wrote {len(pins)} pins to {REQUIREMENTS.relative_to(REPO_ROOT)}")
            return 0
        layers = build(
            args.out.resolve(),
            platform=args.platform,
            python_version=args.python_version,
            requirements=args.requirements.resolve(),
            compile_with=args.compile_with,
        )
    except subprocess.CalledProcessError as error:
        message = f"build_layers: the installer failed (exit {error.returncode}), as it says above"
        print(message, file=sys.stderr)
        return 1
    except LayersNotBuilt as error:
        print(f"build_layers: {error}", file=sys.stderr)
        return 1
    for path in (layers.dependencies, layers.common):
        print(f"{path}: {directory_size(path) / 1e6:.1f} MB unzipped")
    if json.loads(layers.info_file.read_text())["bytecode"] is None:
        print(f"build_layers: warning: {bytecode.missing_message(args.python_version)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
