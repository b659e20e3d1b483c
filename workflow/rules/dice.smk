# One DICE iteration t of experiment exp (Algorithm 1 lines 3-7):
# sample -> score -> search_alpha -> mix -> train. Line 7, the reference update pi_ref^(t) =
# pi_theta^(t-1), is the train rule's `ref` input: train_reference in common.smk, which asks
# dicewf.config.reference_path.


rule sample:
    """Algorithm 1 line 3 on one shard of the prompt set (config sharding.shards)."""
    input:
        policy=prev_policy,
        prompts=config["base"]["prompts"],
    output:
        samples=ensure(
            "results/{exp}/iter{iter}/shards/{scatteritem}/samples.parquet", non_empty=True
        ),
    log:
        "logs/{exp}/iter{iter}/sample/{scatteritem}.log",
    benchmark:
        "results/benchmarks/{exp}/iter{iter}/sample/{scatteritem}.tsv"
    conda:
        "../../envs/sampling.yaml"
    threads: MODEL_THREADS
    resources:
        gpu=1,
        mem_mb=64000,
        runtime=240,
        cpus_per_task=8,
    params:
        sampling=lambda w: run_seeded(w, xp(w)["sampling"]),
        backend=config["sampler"]["backend"],
        engine=config["sampler"]["vllm"],
    script:
        "../scripts/sample.py"


rule score:
    """Algorithm 1 line 3, the rewards: the implicit reward of one shard's samples
    (pi_theta^(t-1) against pi_ref^(t-1))."""
    input:
        samples=shard_samples,
        policy=prev_policy,
        reference=prev_reference,
    output:
        scores=ensure(
            "results/{exp}/iter{iter}/shards/{scatteritem}/scores.parquet", non_empty=True
        ),
    log:
        "logs/{exp}/iter{iter}/score/{scatteritem}.log",
    benchmark:
        "results/benchmarks/{exp}/iter{iter}/score/{scatteritem}.tsv"
    conda:
        # vllm for score.backend vllm; torch and transformers as in training
        "../../envs/sampling.yaml"
    threads: MODEL_THREADS
    resources:
        gpu=1,
        mem_mb=64000,
        runtime=120,
        cpus_per_task=8,
    params:
        beta=lambda w: xp(w)["train"]["beta"],
        # the implicit reward's settings and the response filters (method and judge belong to
        # the judge rule)
        score=lambda w: {k: v for k, v in xp(w)["score"].items() if k not in ("method", "judge")},
        # the engine the samples came from, for score.backend vllm only (so that a changed
        # sampler.vllm does not rerun transformers scoring)
        engine=lambda w: (config["sampler"]["vllm"] if xp(w)["score"]["backend"] == "vllm" else {}),
    script:
        "../scripts/score.py"


rule judge:
    """Algorithm 1 line 3 with LLM-as-a-Judge rewards (score.method: judge, the Appendix C
    ablation): pi_theta^(t-1) rates each of its own responses
    0-5 with the Appendix E template, sampling.n times; the reward is the mean of the parsed
    ratings when at least min_ratings parse (alpha = 0, Appendix C)."""
    input:
        samples=shard_samples,
        policy=prev_policy,
        template=lambda w: repo_path(xp(w)["score"]["judge"]["template"]),
    output:
        scores=ensure(
            "results/{exp}/iter{iter}/shards/{scatteritem}/judge_scores.parquet", non_empty=True
        ),
    log:
        "logs/{exp}/iter{iter}/judge/{scatteritem}.log",
    benchmark:
        "results/benchmarks/{exp}/iter{iter}/judge/{scatteritem}.tsv"
    conda:
        "../../envs/sampling.yaml"
    threads: MODEL_THREADS
    resources:
        gpu=1,
        mem_mb=64000,
        runtime=240,
        cpus_per_task=8,
    params:
        sampling=lambda w: run_seeded(w, xp(w)["score"]["judge"]["sampling"]),
        min_ratings=lambda w: xp(w)["score"]["judge"]["min_ratings"],
        max_prompt_tokens=lambda w: xp(w)["score"]["judge"]["max_prompt_tokens"],
        filters=lambda w: {k: xp(w)["score"][k] for k in RESPONSE_FILTERS},
        backend=config["sampler"]["backend"],
        engine=config["sampler"]["vllm"],
    script:
        "../scripts/judge_score.py"


rule gather_shards:
    """Algorithm 1 line 3: the shards' rewards concatenated (the same file for any number of
    shards)."""
    input:
        scores=shard_scores("scores"),
    output:
        scores=ensure("results/{exp}/iter{iter}/scores.parquet", non_empty=True),
    log:
        "logs/{exp}/iter{iter}/gather.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/gather.py"


rule gather_samples:
    """Algorithm 1 line 3: all samples of an iteration in one file (for inspection; nothing
    downstream reads it)."""
    input:
        samples=gather.split("results/{{exp}}/iter{{iter}}/shards/{scatteritem}/samples.parquet"),
    output:
        samples=ensure("results/{exp}/iter{iter}/samples.parquet", non_empty=True),
    log:
        "logs/{exp}/iter{iter}/gather_samples.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/gather.py"


rule search_alpha:
    """Algorithm 1 line 4: alpha* of Eq. 6 (or the fixed alpha) and the length-regularised
    pairs D(alpha*) built from the iteration's rewards (dicewf.alpha.run_search)."""
    input:
        scores=shared_scores,
    output:
        alpha=paper.ALPHA,
        pairs=ensure("results/{exp}/iter{iter}/pairs.parquet", non_empty=True),
        length_diffs=paper.LENGTH_DIFFS,
    log:
        "logs/{exp}/iter{iter}/search_alpha.log",
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=8000,
        runtime=30,
        cpus_per_task=1,
    params:
        alpha=lambda w: run_seeded(w, xp(w)["alpha"], after="min_responses"),
        # the scores column holding log pi_ref^(t), carried into the pairs (dicewf.reflogps)
        ref_logps=reused_ref_column,
    script:
        "../scripts/search_alpha.py"


rule alpha_landscape:
    """Figure 4's data: the objective of Eq. 6 over the alpha box, from the cached rewards
    and alpha* (dicewf.alpha.figure4_landscape). A plot setting, so its own local job: a new
    report.figure4.points redraws Figure 4 without rerunning the search or anything after it."""
    input:
        scores=shared_scores,
        alpha=paper.ALPHA,
    output:
        landscape=paper.LANDSCAPE,
    log:
        "logs/{exp}/iter{iter}/alpha_landscape.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        alpha=lambda w: run_seeded(w, xp(w)["alpha"], after="min_responses"),
        points=config["report"]["figure4"]["points"],
    script:
        "../scripts/alpha_landscape.py"


rule mix:
    """Algorithm 1 line 5: the training set, a share gamma of D_offline and the rest from
    D(alpha*) (dicewf.mixing). SeRA's experiments mix in sera_mix (sera.smk)."""
    input:
        unpack(generated_pairs),
        offline=experiment_offline,
    output:
        mixed=ensure("results/{exp}/iter{iter}/mixed.parquet", non_empty=True),
    log:
        "logs/{exp}/iter{iter}/mix.log",
    wildcard_constraints:
        exp=cfg.alternation(DICE_EXPERIMENTS),
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
        cpus_per_task=1,
    params:
        mix=lambda w: run_seeded(w, xp(w)["mix"], after="n_pairs"),
        iteration=lambda w: int(w.iter),  # the split is drawn anew each iteration
    script:
        "../scripts/mix.py"


rule ref_logps:
    """Algorithm 1 line 6's reference log-probs, once: the mixed pairs that carry none from the
    score stage (the offline share, or every pair where the train reference is no scoring
    model) scored under pi_ref^(t), tokenized as TRL tokenizes (dicewf.reflogps.fill), so the
    train job runs no reference model."""
    input:
        pairs="results/{exp}/iter{iter}/mixed.parquet",
        policy=prev_policy,
        reference=train_reference,
    output:
        pairs=ensure("results/{exp}/iter{iter}/train_pairs.parquet", non_empty=True),
    log:
        "logs/{exp}/iter{iter}/ref_logps.log",
    benchmark:
        "results/benchmarks/{exp}/iter{iter}/ref_logps.tsv"
    conda:
        "../../envs/training.yaml"
    threads: MODEL_THREADS
    resources:
        gpu=1,
        mem_mb=64000,
        runtime=60,
        cpus_per_task=8,
    params:
        score=lambda w: {k: xp(w)["score"][k] for k in ("max_tokens_per_batch", "dtype")},
    script:
        "../scripts/ref_logps.py"


rule experiment_config:
    """Every value the experiment runs with, in one file: its block merged over defaults (and
    its setting's), the schema's defaults filled in (dicewf.config.resolved). Nothing reads it,
    so a changed value rewrites it without rerunning anything else."""
    output:
        config="results/{exp}/config.yaml",
    log:
        "logs/{exp}/experiment_config.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        settings=lambda w: cfg.resolved(config, w.exp),
    script:
        "../scripts/write_settings.py"


rule train_args:
    # The train block as the file train_launch.py reads (--config): hyperparameters stay off the
    # train job's command line (recorded in .snakemake/metadata and in Snakemake's error output).
    # A changed block rewrites the file, which reruns the train job.
    output:
        args="results/{exp}/iter{iter}/train_args.json",
    log:
        "logs/{exp}/iter{iter}/train_args.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        settings=lambda w: xp(w)["train"],  # DPOConfig (KTOConfig) fields
    script:
        "../scripts/write_settings.py"


rule train:
    # DPO on the mixed pairs (Algorithm 1 line 6; or KTO, or length-regularised DPO with
    # `length_penalty`, for the paper's ablations) through the training entry point
    # train_launch.py (dicewf.launch: TRL's TrlParser over DPOConfig/KTOConfig, the train block
    # read from --config, as toy_start_policy runs it). A job with gpu <= 1 is one `python`
    # process (gpu=0: on the CPU, --cpu); more GPUs run one process per GPU under `accelerate
    # launch` with the accelerate config chosen by train_launcher.accelerate_config
    # (workflow/accelerate/; dicewf.jobs.train_launcher). The job's threads are shared by its
    # processes (--threads). With `save_steps` in the train block, checkpoints go to the sibling
    # folder `policy.checkpoints/`, the one thing written outside the outputs: Snakemake deletes
    # the outputs before a rerun, and a killed job's rerun resumes from there. It is deleted once
    # the policy and the metrics are written.
    input:
        model=prev_policy,
        ref=train_reference,
        pairs=train_pairs,
        args=rules.train_args.output.args,
        code=workflow.source_path("../scripts/train_launch.py"),
    output:
        model=directory("results/{exp}/iter{iter}/policy"),
        metrics="results/{exp}/iter{iter}/train_metrics.json",
    log:
        "logs/{exp}/iter{iter}/train.log",
    benchmark:
        "results/benchmarks/{exp}/iter{iter}/train.tsv"
    conda:
        "../../envs/training.yaml"
    threads: MODEL_THREADS
    resources:
        gpu=1,
        mem_mb=128000,
        runtime=480,
        cpus_per_task=16,
    params:
        seed=run_seed,
        # input.code is Snakemake's cached copy of the script, away from its dicewf package
        scripts=str(Path(workflow.basedir) / "workflow" / "scripts"),
        # `python` (gpu <= 1) or `accelerate launch` with one process per GPU; derived from
        # resources, so a different GPU count does not by itself rerun the job. A
        # train.global_batch_size that is no multiple of per_device_train_batch_size x
        # processes fails here, before the job starts
        launcher=lambda w, resources: jobs.train_launcher(
            resources.gpu,
            accelerate_config=jobs.accelerate_config_path(
                workflow.basedir, config["train_launcher"]["accelerate_config"]
            ),
            processes=train_processes(xp(w)["train"], resources.gpu),
        ),
        trainer=lambda w: xp(w)["trainer"],
        length_penalty=lambda w: xp(w)["length_penalty"],
        device=lambda w, resources: "" if resources.gpu else "--cpu",
    shell:
        "PYTHONPATH={params.scripts:q}${{PYTHONPATH:+:$PYTHONPATH}}"
        " {params.launcher}"
        " {input.code:q} --config {input.args:q} --model {input.model:q} --pairs {input.pairs:q}"
        " --ref {input.ref:q} --out {output.model:q} --metrics {output.metrics:q}"
        " --seed {params.seed} --threads {threads} {params.device}"
        " --trainer {params.trainer} --length-penalty {params.length_penalty}"
        " > {log:q} 2>&1"
