# The embedded toy world: everything the default configuration starts from, built locally.


rule toy_world:
    output:
        train_prompts=ensure("results/toy/data/train_prompts.parquet", non_empty=True),
        eval_prompts=ensure("results/toy/data/eval_prompts.parquet", non_empty=True),
        offline=ensure("results/toy/data/offline.parquet", non_empty=True),
        agreement_pairs=ensure("results/toy/data/agreement_pairs.parquet", non_empty=True),
        sft_demos=ensure("results/toy/data/sft_demos.parquet", non_empty=True),
    log:
        "logs/toy_world.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        world=seeded(config["world"], after=""),
    script:
        "../scripts/toy_world.py"


rule toy_init_model:
    input:
        train_prompts="results/toy/data/train_prompts.parquet",
    output:
        model=directory("results/toy/models/init"),
    log:
        "logs/toy_init_model.log",
    conda:
        "../../envs/training.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
        cpus_per_task=1,
    params:
        model=seeded(config["toy_model"], after=None),
        world_seed=config["seed"],
    script:
        "../scripts/toy_init_model.py"


rule toy_sft:
    input:
        model="results/toy/models/init",
        demos="results/toy/data/sft_demos.parquet",
    output:
        model=directory("results/toy/models/sft"),
        metrics="results/toy/models/sft_metrics.json",
    log:
        "logs/toy_sft.log",
    benchmark:
        "results/benchmarks/toy_sft.tsv"
    conda:
        "../../envs/training.yaml"
    threads: MODEL_THREADS
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=30,
        cpus_per_task=2,
    params:
        args=config["sft"],
        seed=config["seed"],
    script:
        "../scripts/toy_sft.py"


rule toy_start_policy:
    # pi_theta^(0): DPO of the SFT model on D_offline, through the same entry point as the
    # train rule (train_launch.py; the start_policy block read as its --config file would be)
    input:
        model="results/toy/models/sft",
        pairs="results/toy/data/offline.parquet",
    output:
        model=directory("results/toy/models/start_policy"),
        metrics="results/toy/models/start_policy_metrics.json",
    log:
        "logs/toy_start_policy.log",
    benchmark:
        "results/benchmarks/toy_start_policy.tsv"
    conda:
        "../../envs/training.yaml"
    threads: MODEL_THREADS
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=30,
        cpus_per_task=2,
    params:
        args=config["start_policy"],
        seed=config["seed"],
    script:
        "../scripts/train_launch.py"


rule reward_agreement:
    """Table 5 analogue: implicit reward of pi_theta^(0) vs pi_ref^(0) against the judge."""
    input:
        policy=model_input(hub.local_dir(config["base"]["policy"])),
        reference=model_input(hub.local_dir(config["base"]["reference"])),
        pairs=config["base"]["agreement_pairs"],
    output:
        metrics="results/toy/agreement.json",
    log:
        "logs/reward_agreement.log",
    conda:
        "../../envs/training.yaml"
    threads: MODEL_THREADS
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=60,
        cpus_per_task=4,
    params:
        beta=config["start_policy"]["beta"],  # the implicit reward of pi_theta^(0)
        target=config["agreement"]["target"],
        max_tokens_per_batch=config["defaults"]["score"]["max_tokens_per_batch"],
    script:
        "../scripts/reward_agreement.py"
