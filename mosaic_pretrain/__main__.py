import sys

from mosaic_pretrain.cli import main

sys.exit(main())
