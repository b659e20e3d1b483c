# Noisy preferences (SeRA, Section 4.2) for any experiment with noise_fraction > 0: D_offline
# with a seeded share of its labels swapped, and the runs' own pi_theta^(0) trained on it.


rule noisy_offline:
    """SeRA's noisy preferences (Section 4.2), for any method: D_offline with chosen and
    rejected swapped on a share noise_fraction of its pairs, drawn from the config's seed
    (dicewf.sera.swap_labels); column label_swapped marks them. One copy per setting and noise
    level, in the folder of its first experiment (dicewf.config.start_owner): the runs' own
    pi_theta^(0), their mixing (DICE) or selection (SeRA) read it."""
    input:
        offline=setting_offline,
    output:
        offline=ensure("results/{exp}/data/offline_noisy.parquet", non_empty=True),
    log:
        "logs/{exp}/noisy_offline.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        fraction=lambda w: xp(w)["noise_fraction"],
        seed=config["seed"],
    script:
        "../scripts/noisy_offline.py"


rule noisy_start_policy:
    """pi_theta^(0) of runs on noisy D_offline (dicewf.config.trains_own_start), once per
    noise level (dicewf.config.start_owner): DPO of the setting's reference (the SFT model) on
    the noisy pairs with the start_policy block, the recipe of the toy start policy, through
    the train rule's entry point (train_launch.py). SeRA's selection at iteration 1 then scores
    the noisy pairs by a model that learnt from them, as the paper's t = 0 model did (Section
    4.2); evaluated as {exp}-iter0, it is the paper's DPO on the noisy data."""
    input:
        model=lambda w: reference_of(w.exp, 0),
        pairs=experiment_offline,
    output:
        model=directory("results/{exp}/iter0/policy"),
        metrics="results/{exp}/iter0/train_metrics.json",
    log:
        "logs/{exp}/iter0/noisy_start_policy.log",
    benchmark:
        "results/benchmarks/{exp}/iter0/noisy_start_policy.tsv"
    wildcard_constraints:
        exp=cfg.alternation(START_OWNERS),
    conda:
        "../../envs/training.yaml"
    threads: MODEL_THREADS
    resources:
        gpu=1,
        mem_mb=64000,
        runtime=240,
        cpus_per_task=8,
    params:
        args=config.get("start_policy"),
        seed=config["seed"],
    script:
        "../scripts/train_launch.py"
