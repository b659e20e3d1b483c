"""Run a command (Snakemake) with a warm start for its local jobs (dicewf.forkserver):

python workflow/scripts/forkserver.py -- snakemake --cores 2
"""

import sys

from dicewf.forkserver import main

if __name__ == "__main__":
    sys.exit(main())
