"""``python -m emotion_client``: the ``emotion`` CLI without its console script."""

import sys

from emotion_client.cli import main

sys.exit(main())
