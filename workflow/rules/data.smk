# The paper's datasets (paper configuration only): hub snapshots named hf://datasets/ORG/NAME,
# downloaded by their own rule, then prepared into the workflow's parquet contracts.


rule download_dataset:
    output:
        snapshot=directory("resources/hub/datasets/{hub_dataset}"),
    log:
        "logs/download/datasets/{hub_dataset}.log",
    localrule: True  # compute nodes often have no internet; the login node downloads
    conda:
        "../../envs/training.yaml"
    params:
        spec=lambda w: hub.spec_of(f"datasets/{w.hub_dataset}"),
        allow_patterns=dataset_patterns,
    script:
        "../scripts/download_dataset.py"


rule prepare_ultrafeedback:
    """D_offline: a seeded subset of UltraFeedback's binarized preference pairs; its prompts
    are the prompt set X (Algorithm 1 line 1)."""
    input:
        snapshot=data_snapshot("ultrafeedback"),
    output:
        offline=ensure("results/data/ultrafeedback/offline.parquet", non_empty=True),
        prompts=ensure("results/data/ultrafeedback/prompts.parquet", non_empty=True),
    log:
        "logs/data/prepare_ultrafeedback.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        split=lambda w: config["data"]["ultrafeedback"]["split"],
        n_pairs=lambda w: config["data"]["ultrafeedback"]["n_pairs"],
        seed=config["seed"],
    script:
        "../scripts/prepare_ultrafeedback.py"


rule prepare_ultrafeedback_all:
    """Every usable UltraFeedback preference pair of the split (the same filters as D_offline,
    no subsampling): the paper's IntlRM training set (~60k pairs; agreement.reward_model_pairs)."""
    input:
        snapshot=data_snapshot("ultrafeedback"),
    output:
        offline=ensure("results/data/ultrafeedback/all_pairs.parquet", non_empty=True),
    log:
        "logs/data/prepare_ultrafeedback_all.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        split=lambda w: config["data"]["ultrafeedback"]["split"],
        n_pairs=None,  # all of them
        seed=config["seed"],
    script:
        "../scripts/prepare_ultrafeedback.py"


rule prepare_alpaca_eval:
    """AlpacaEval 2: the 805 instructions with the benchmark's baseline outputs."""
    input:
        snapshot=data_snapshot("alpaca_eval"),
    output:
        eval_set=ensure("results/data/alpaca_eval.parquet", non_empty=True),
    log:
        "logs/data/prepare_alpaca_eval.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/prepare_alpaca_eval.py"


rule prepare_arena_hard:
    """Arena-Hard: the 500 questions with the baseline model's answers."""
    input:
        snapshot=data_snapshot("arena_hard"),
    output:
        eval_set=ensure("results/data/arena_hard.parquet", non_empty=True),
    log:
        "logs/data/prepare_arena_hard.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        baseline=lambda w: config["data"]["arena_hard"]["baseline"],
    script:
        "../scripts/prepare_arena_hard.py"


rule download_alpaca_eval_lc:
    """df_gamed.csv of tatsu-lab/alpaca_eval: the data of AlpacaEval 2's length-controlled GLM,
    fetched on the login node so annotation needs no hub access."""
    output:
        cache=directory("resources/hub/alpaca_eval_lc"),
    log:
        "logs/download/alpaca_eval_lc.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/download_alpaca_eval_lc.py"
