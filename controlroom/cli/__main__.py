"""`python -m controlroom.cli`."""

import sys

from controlroom.cli.entry import main

sys.exit(main())
