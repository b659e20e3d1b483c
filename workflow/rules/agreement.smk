# Table 5: agreement of reward models with a judge's labels on (x, y1, y2) tuples sampled from
# the first DICE iteration of the main setting (report.setting): the DPO implicit reward against
# an internal scalar reward model (IntlRM) trained on agreement.reward_model_pairs (D_offline, or
# the full UltraFeedback set as in the paper) and any published reward models
# (agreement.external_reward_models, the paper's ERM-555k).


rule train_reward_model:
    """IntlRM: TRL's RewardTrainer on its pairs, from the setting's SFT model pi_ref^(0)."""
    input:
        model=model_input(hub.local_dir(cfg.base(config, MAIN_SETTING)["reference"])),
        pairs=reward_model_pairs,
    output:
        model=directory(f"{OWN}/agreement/reward_model"),
        metrics=f"{OWN}/agreement/reward_model_metrics.json",
    log:
        f"{OWN_LOGS}/agreement/train_reward_model.log",
    benchmark:
        f"{OWN_BENCHMARKS}/agreement/train_reward_model.tsv"
    conda:
        "../../envs/training.yaml"
    threads: MODEL_THREADS
    resources:
        gpu=1,
        mem_mb=128000,
        runtime=480,
        cpus_per_task=16,
    params:
        args=config["agreement"]["reward_model"],
        seed=config["seed"],
    script:
        "../scripts/train_reward_model.py"


rule agreement:
    input:
        unpack(agreement_inputs),
        reward_model=f"{OWN}/agreement/reward_model",
    output:
        **AGREEMENT_JUDGE_CACHE,
        agreement=paper.agreement_path(OWN),
        tuples=paper.claims.tuples_path(OWN),
        # an API judge's replies: appended to judge_cache.partial.jsonl beside it as they
        # arrive (a killed or failed job resumes), moved here when the job succeeds (so
        # --forcerun asks again)
    log:
        f"{OWN_LOGS}/agreement/agreement.log",
    conda:
        "../../envs/training.yaml"
    threads: MODEL_THREADS
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=60,
        cpus_per_task=4,
    params:
        n=config["agreement"]["tuples"],
        seed=config["seed"],
        judge=config["agreement"]["judge"],
        # the toy world's gold judge (checks.world_block: a world block when judge is gold)
        gold_judge=(config["world"]["judge"] if config["agreement"]["judge"] == "gold" else None),
        setting=MAIN_SETTING,
        # label and head of each published reward model, in the order of input.external
        external=[
            {"label": label, "head": m["head"]}
            for label, m in config["agreement"]["external_reward_models"].items()
        ],
        max_tokens_per_batch=config["defaults"]["score"]["max_tokens_per_batch"],
    script:
        "../scripts/agreement.py"
