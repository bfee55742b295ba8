import sys

from bgmid.cli import main

sys.exit(main())
