"""``python -m dbt_project.cli``: the ``etl`` command."""

import sys

from dbt_project.cli.main import main

sys.exit(main())
