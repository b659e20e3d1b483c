# SeRA's evaluation at paper scale (eval.sera; docs/sera.md#paper-scale, dicewf.sera_eval):
# the answers of each evaluated model (the last iteration of every experiment in
# eval.sera.experiments, and the base and SFT models of their settings) to AlpacaEval's 805,
# Vicuna's 80, Evol-Instruct's 218 and UltraFeedback's test prompts, graded 1-10 and compared
# pairwise with the SFT model's answers (and AlpacaEval's references) by an OpenAI-compatible
# judge. results/eval/{model}/sera/metrics.json holds a model's metrics on every benchmark;
# SeRA's Tables 1, 2 and 9 (results/tables/sera_paper_table{1,2,9}) set them beside the paper's.

SERA_EVAL = config["eval"]["sera"]
SERA_BENCHES = SERA_EVAL["benchmarks"]
SERA_SFT = {cfg.sera_sft_model(s): s for s in cfg.sera_eval_settings(config)}
SERA_MODELS = cfg.sera_eval_models(config, OWNERS)
# SeRA's Tables 1, 2 and 9 from these metrics: each table's rows (dicewf.paper.sera_paper_tables);
# `sera_paper` builds those with a row
SERA_PAPER_ROWS = {t: sera_paper_tables.rows(t, config, OWNERS) for t in sera_paper_tables.TABLES}
SERA_PAPER_TABLES = [t for t, rows in SERA_PAPER_ROWS.items() if rows]


def sera_eval_policy(w):
    """The policy folder of an evaluated model; ``{setting}_sft`` is the setting's reference."""
    if w.model in SERA_SFT:
        return model_input(hub.local_dir(cfg.base(config, SERA_SFT[w.model])["reference"]))
    return eval_policy_of(w.model)


def sera_benchmark_source(w):
    """What a benchmark is prepared from: a hub snapshot or a fetched file."""
    if w.sbench == "alpaca_eval":
        return data_snapshot("alpaca_eval")(w)
    if w.sbench == "ultrafeedback":
        return data_snapshot("ultrafeedback")(w)
    return f"resources/benchmarks/{w.sbench}.jsonl"


def sera_judge_inputs(w):
    """The benchmark, the model's answers and, for any model but an SFT model, the answers of
    its setting's SFT model."""
    inputs = {
        "questions": f"results/data/sera/{w.sbench}.parquet",
        "responses": f"results/eval/{w.model}/sera/{w.sbench}/responses.parquet",
    }
    if w.model not in SERA_SFT:
        sft = cfg.sera_sft_model(cfg.model_setting(config, w.model))
        inputs["sft"] = f"results/eval/{sft}/sera/{w.sbench}/responses.parquet"
    return inputs


def sera_paper_table_inputs(w):
    """The metrics of every model the table's rows show."""
    return sera_paper_tables.input_paths(SERA_PAPER_ROWS[w.sptable])


rule sera_fetch_benchmark:
    """Vicuna's and Evol-Instruct's question files, from eval.sera.<bench>_url."""
    output:
        questions="resources/benchmarks/{sbench}.jsonl",
    log:
        "logs/download/benchmarks/{sbench}.log",
    wildcard_constraints:
        sbench="vicuna|evol_instruct",
    localrule: True  # compute nodes often have no internet; the login node downloads
    conda:
        "../../envs/analysis.yaml"
    params:
        url=lambda w: SERA_EVAL[f"{w.sbench}_url"],
    script:
        "../scripts/sera_fetch_benchmark.py"


rule sera_prepare_benchmark:
    """A benchmark's prompts (prompt_id, prompt; AlpacaEval with both reference answers)."""
    input:
        source=sera_benchmark_source,
    output:
        prompts=ensure("results/data/sera/{sbench}.parquet", non_empty=True),
    log:
        "logs/data/sera_prepare_{sbench}.log",
    wildcard_constraints:
        sbench=cfg.alternation(SERA_BENCHES),
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        bench="{sbench}",
        split=SERA_EVAL["ultrafeedback_split"],
    script:
        "../scripts/sera_prepare_benchmark.py"


rule sera_generate:
    """The model's answers to every benchmark's prompts (one model load), with its chat
    template and Appendix B.3's decoding (eval.sera.sampling)."""
    input:
        **{b: f"results/data/sera/{b}.parquet" for b in SERA_BENCHES},
        policy=sera_eval_policy,
    output:
        **{
            b: ensure(f"results/eval/{{model}}/sera/{b}/responses.parquet", non_empty=True)
            for b in SERA_BENCHES
        },
    log:
        "logs/eval/{model}/sera_generate.log",
    benchmark:
        "results/benchmarks/eval/{model}/sera_generate.tsv"
    wildcard_constraints:
        model=cfg.alternation(SERA_MODELS),
    conda:
        "../../envs/sampling.yaml"
    threads: MODEL_THREADS
    resources:
        gpu=1,
        mem_mb=64000,
        runtime=180,
        cpus_per_task=8,
    params:
        sampling=seeded(SERA_EVAL["sampling"]),
        backend=config["sampler"]["backend"],
        engine=config["sampler"]["vllm"],
        prompt_schema="prompts",  # SeRA's benchmark prompts (dicewf.io), not eval_prompts
    script:
        "../scripts/generate.py"


rule sera_judge:
    """One model on one benchmark: 1-10 grades and weighted win rates (dicewf.sera_eval)."""
    input:
        unpack(sera_judge_inputs),
    output:
        judgments="results/eval/{model}/sera/{sbench}/judgments.parquet",
        metrics="results/eval/{model}/sera/{sbench}/metrics.json",
        # the replies: judge_cache.partial.jsonl beside it while the job runs (a killed job
        # resumes from it), moved here when it succeeds
        judge_cache="results/eval/{model}/sera/{sbench}/judge_cache.jsonl",
    log:
        "logs/eval/{model}/sera_judge_{sbench}.log",
    wildcard_constraints:
        model=cfg.alternation(SERA_MODELS),
        sbench=cfg.alternation(SERA_BENCHES),
    localrule: True  # API calls; the login node has the network
    conda:
        "../../envs/analysis.yaml"
    params:
        bench="{sbench}",
        judge=SERA_EVAL["judge"],
        both_orders=SERA_EVAL["both_orders"],
    script:
        "../scripts/sera_judge.py"


rule sera_eval_summary:
    """A model's SeRA metrics on every benchmark, in one file."""
    input:
        **{b: f"results/eval/{{model}}/sera/{b}/metrics.json" for b in SERA_BENCHES},
    output:
        metrics="results/eval/{model}/sera/metrics.json",
    log:
        "logs/eval/{model}/sera_summary.log",
    wildcard_constraints:
        model=cfg.alternation(SERA_MODELS),
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/sera_eval_summary.py"


rule sera_paper_table:
    """SeRA's Table 1, 2 or 9 at paper scale, each cell beside the paper's number
    (dicewf.paper.sera_paper_tables), as CSV, Markdown and LaTeX."""
    input:
        metrics=sera_paper_table_inputs,
    output:
        csv=f"{OWN}/tables/{{sptable}}.csv",
        md=report(
            f"{OWN}/tables/{{sptable}}.md",
            caption="../report/caption.rst",
            category="Paper",
            subcategory="SeRA tables",
            labels={"name": "{sptable}"},
        ),
        tex=f"{OWN}/tables/{{sptable}}.tex",
    log:
        f"{OWN_LOGS}/report/{{sptable}}.log",
    wildcard_constraints:
        sptable=cfg.alternation(list(sera_paper_tables.TABLES)),
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        table="{sptable}",
        rows=lambda w: SERA_PAPER_ROWS[w.sptable],
        benchmarks=SERA_BENCHES,
        caption=lambda w: caption_of(w.sptable),
    script:
        "../scripts/report_sera_paper_table.py"


rule sera_paper:
    """Every SeRA evaluation of the config and the tables with a row:
    `snakemake --configfile config/paper.yaml sera_paper`."""
    input:
        [f"results/eval/{m}/sera/metrics.json" for m in SERA_MODELS],
        [f"{OWN}/tables/{t}.md" for t in SERA_PAPER_TABLES],
    localrule: True
