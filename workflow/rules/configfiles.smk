# Snakemake reads config files leniently: a key given twice keeps its last value silently, and a
# YAML syntax error in config.yaml shows no line. Each config file is read strictly first
# (dicewf.checks.load_yaml): a duplicate key is refused naming file, key and lines, a syntax error
# shows its line and column. (A syntax error in a --configfile stops Snakemake before this runs;
# `snakemake --verbose` shows its line.)
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow" / "scripts"))

from dicewf import checks  # noqa: E402

for _file in workflow.config_settings.configfiles or ["config.yaml"]:
    if Path(_file).is_file():  # a missing file is Snakemake's to name
        checks.load_yaml(_file)
