# DICE: bootstrapping language models with DPO implicit rewards.
# The table of contents; workflow-level Python lives in workflow/rules/common.smk.

from snakemake.utils import min_version

min_version("9.0")


# every config file read strictly first: duplicate keys refused, YAML errors with their line
include: "workflow/rules/configfiles.smk"


# `--configfile FILE...` on the command line is the whole configuration (merged in order);
# without it, config.yaml (the toy world) is. The two are never merged.
if not workflow.config_settings.configfiles:

    configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/data.smk"


if "world" in config:  # the embedded toy world; the paper configuration has none

    include: "workflow/rules/toy.smk"


include: "workflow/rules/dice.smk"
include: "workflow/rules/noise.smk"
include: "workflow/rules/sera.smk"
include: "workflow/rules/eval.smk"


if not TOY_EVAL and "sera" in config["eval"]:  # SeRA's paper-scale evaluation

    include: "workflow/rules/sera_eval.smk"


include: "workflow/rules/agreement.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/sera_figures.smk"


rule all:
    default_target: True
    input:
        all_targets(),
