"""Build the Lambda layers into build/layers (arm64, Python 3.12 unless told otherwise).

    python scripts/build_layers.py                   # what `cdk synth` / `cdk deploy` need
    python scripts/build_layers.py --out DIR --platform manylinux2014_x86_64 --python-version 3.11
    python scripts/build_layers.py --lock            # re-pin requirements/lambda.txt

The logic lives in infra/layers.py; this file only makes it runnable from a checkout.
Needs pip's index and npm (the Amazon RDS CA bundle comes from a checksum-pinned npm
tarball).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.layers import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
