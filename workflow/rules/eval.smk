# Evaluation of every model (each setting's base and every experiment's iterations).
# eval.suite: toy - the toy world's held-out prompts judged by its gold judge (AlpacaEval-style
# LC/WR against reference responses, and Arena-Hard-style pairwise scores with a bootstrap
# interval); paper - AlpacaEval 2 through the alpaca-eval package and Arena-Hard with a
# configured OpenAI-compatible judge. Either way the tables read results/eval/{model}/metrics.json.

if TOY_EVAL:

    rule eval:
        input:
            policy=eval_policy,
            prompts=config["base"]["eval_prompts"],
        output:
            responses="results/eval/{model}/responses.parquet",
            judgements="results/eval/{model}/judgements.parquet",
            metrics=paper.METRICS,
        log:
            "logs/eval/{model}.log",
        benchmark:
            "results/benchmarks/eval/{model}.tsv"
        conda:
            "../../envs/sampling.yaml"
        threads: MODEL_THREADS
        resources:
            gpu=1,
            mem_mb=64000,
            runtime=120,
            cpus_per_task=8,
        params:
            sampling=eval_sampling,
            backend=config["sampler"]["backend"],
            engine=config["sampler"]["vllm"],
            judge=config["world"]["judge"],
            l2=config["eval"]["l2"],
            arena=seeded(config["eval"]["arena"], after="n_bootstrap"),
            intervals=seeded(config["eval"]["intervals"], after=None),
        script:
            "../scripts/evaluate.py"

else:

    rule generate_benchmarks:
        """The model's answers to both benchmarks' prompts, with the model's chat template, in
        one generation run (one model load)."""
        input:
            policy=eval_policy,
            alpaca_eval="results/data/alpaca_eval.parquet",
            arena_hard="results/data/arena_hard.parquet",
        output:
            alpaca_eval=ensure("results/eval/{model}/alpaca_eval/responses.parquet", non_empty=True),
            arena_hard=ensure("results/eval/{model}/arena_hard/responses.parquet", non_empty=True),
        log:
            "logs/eval/{model}/generate.log",
        benchmark:
            "results/benchmarks/eval/{model}/generate.tsv"
        conda:
            "../../envs/sampling.yaml"
        threads: MODEL_THREADS
        resources:
            gpu=1,
            mem_mb=64000,
            runtime=180,
            cpus_per_task=8,
        params:
            sampling=eval_sampling,
            backend=config["sampler"]["backend"],
            engine=config["sampler"]["vllm"],
        script:
            "../scripts/generate.py"

    rule alpaca_eval_annotate:
        """AlpacaEval 2 LC and raw win rates through the alpaca-eval package's annotator."""
        input:
            responses="results/eval/{model}/alpaca_eval/responses.parquet",
            eval_set="results/data/alpaca_eval.parquet",
            lc_data="resources/hub/alpaca_eval_lc",
        output:
            metrics="results/eval/{model}/alpaca_eval/metrics.json",
            annotations=directory("results/eval/{model}/alpaca_eval/annotations"),
        log:
            "logs/eval/{model}/alpaca_eval_annotate.log",
        localrule: True  # API calls; the login node has the network
        conda:
            "../../envs/analysis.yaml"
        params:
            # the LC GLM's data comes from input.lc_data; the key from annotator.api_key_env
            annotator=lambda w, input: {
                **config["eval"]["alpaca_eval"],
                "hf_cache_dir": input.lc_data,
            },
            model_name="{model}",
        script:
            "../scripts/alpaca_eval_annotate.py"

    rule arena_hard_judge:
        """Arena-Hard: pairwise judgments against the baseline, score with a 95% interval."""
        input:
            responses="results/eval/{model}/arena_hard/responses.parquet",
            questions="results/data/arena_hard.parquet",
        output:
            judgments="results/eval/{model}/arena_hard/judgments.parquet",
            metrics="results/eval/{model}/arena_hard/metrics.json",
            # the replies: appended to judge_cache.partial.jsonl beside it as they arrive (a
            # killed or failed job resumes from it), moved here when the job succeeds (so
            # --forcerun asks the judge again)
            judge_cache="results/eval/{model}/arena_hard/judge_cache.jsonl",
        log:
            "logs/eval/{model}/arena_hard_judge.log",
        localrule: True
        conda:
            "../../envs/analysis.yaml"
        params:
            judge=config["eval"]["arena_hard"]["judge"],
            prompt=config["eval"]["arena_hard"]["prompt"],
            n_bootstrap=config["eval"]["arena"]["n_bootstrap"],
            seed=config["seed"],
        script:
            "../scripts/arena_hard_judge.py"

    rule eval_summary:
        """One metrics file per model: what every table reads."""
        input:
            alpaca_eval="results/eval/{model}/alpaca_eval/metrics.json",
            arena_hard="results/eval/{model}/arena_hard/metrics.json",
        output:
            metrics=paper.METRICS,
        log:
            "logs/eval/{model}/summary.log",
        localrule: True
        conda:
            "../../envs/analysis.yaml"
        script:
            "../scripts/eval_summary.py"
