import sys

from optimizer3.cli import main

sys.exit(main())
