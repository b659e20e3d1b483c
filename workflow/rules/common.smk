# Workflow-level Python: config validation, wildcard constraints, input functions and targets.
import functools
import json
import os
import sys
from pathlib import Path

from snakemake.utils import validate

sys.path.insert(0, str(Path(workflow.basedir) / "workflow" / "scripts"))

from dicewf import config as cfg  # noqa: E402
from dicewf import batching  # noqa: E402
from dicewf import checks  # noqa: E402
from dicewf import hub  # noqa: E402
from dicewf import jobs  # noqa: E402
from dicewf import paper  # noqa: E402
from dicewf import reflogps  # noqa: E402
from dicewf import secrets  # noqa: E402
from dicewf import seeds  # noqa: E402
from dicewf.paper import sera_figures  # noqa: E402
from dicewf.paper import sera_paper_tables  # noqa: E402

# first: a key in config is refused naming its path (the schema's errors would quote it)
secrets.check(config)
validate(config, workflow.source_path("../schemas/config.schema.yaml"))
cfg.check_standalone(config)
# what the schema cannot see (merged blocks, TRL's own config classes, report targets, the toy
# world's block, local base models): refused here, naming the key path (dicewf.checks); TRL's
# config classes only in the main process (a cluster job re-reads the workflow: checked already)
checks.check_config(config, trl=workflow.is_main_process)

RESERVED = {"toy", "eval", "tables", "figures", "benchmarks", "base", "data", "agreement"}
SETTINGS = cfg.settings(config)
RUNS = cfg.expanded(config)  # full experiment name -> (setting, experiment)
_names = set(RUNS) | set(config.get("settings") or {})  # each a folder under results/
_clash = RESERVED & _names
if _clash:
    raise ValueError(
        f"experiments/settings: names {sorted(_clash)} are reserved for result folders"
    )
if config.get("name") in RESERVED | _names:
    raise ValueError(
        f"name: {config['name']!r} is a reserved result folder, an experiment's or a setting's "
        "name; the configuration's own outputs go under results/<name>/"
    )
# the configuration's own outputs, no experiment's (tables, figures, the agreement run), and
# their logs and benchmarks: results/, logs/, results/benchmarks/ for an unnamed config (the
# toy world), each with name/ under it for a named one (config/paper.yaml: results/paper/...)
OWN = cfg.own_dir(config)
OWN_LOGS = cfg.own_dir(config, "logs")
OWN_BENCHMARKS = cfg.own_dir(config, f"{cfg.RESULTS}/benchmarks")
for _setting in SETTINGS:
    _missing = [k for k in ("policy", "reference") if k not in cfg.base(config, _setting)]
    if _missing:
        raise ValueError(f"base: {_missing} missing (top-level base or settings.{_setting}.base)")
# every experiment resolved once: a bad block fails here, naming the experiment
XP = {_name: cfg.experiment(config, _name) for _name in RUNS}
# the IntlRM trains in one process (a script: job): its global batch must divide now
batching.gradient_accumulation(config["agreement"]["reward_model"], 1, "agreement.reward_model")
# (experiment, iteration) -> the experiments whose samples, scores and run (alpha, mix, train,
# evaluation) it reads: work with equal inputs and settings done once (dicewf.config.owners)
OWNERS = cfg.owners(config)
LAYOUT = paper.Layout.from_config(config)  # which run fills which cell of the paper's tables
# the layout as a param of the table and figure jobs (Figure 2's bins are that job's own param,
# so a new bin count reruns Figure 2 alone)
LAYOUT_PARAM = LAYOUT.to_dict()
# SeRA's runs of the main setting, which fill its Figures 2-6 (sera_figures.smk)
SERA_LAYOUT = sera_figures.SeraLayout.from_config(config, LAYOUT.shared)
SERA_LAYOUT_PARAM = SERA_LAYOUT.to_dict()

# CPU threads of every job that runs a model (sampling, scoring, training, evaluation; the job's
# torch pool, dicewf.jobs.set_threads). One: a GPU job's work is on the GPU, and on a CPU the toy
# jobs run as fast on one thread as on two, so two of them run side by side on 2 cores (the .test
# config: 278 s against 440 s with two threads a job). `--set-threads RULE=N` changes one rule.
MODEL_THREADS = 1
EXPERIMENTS = list(RUNS)
# the method of each experiment (`method:`): DICE's rules (search_alpha, mix) or SeRA's (sera.smk)
SERA_EXPERIMENTS = [e for e in EXPERIMENTS if XP[e]["method"] == "sera"]
# runs on noisy D_offline start from their own pi_theta^(0), trained once per noise level
# under the first such run's name (noisy_start_policy)
START_OWNERS = sorted(
    {cfg.start_owner(config, e) for e in EXPERIMENTS if cfg.trains_own_start(XP[e])}
)
DICE_EXPERIMENTS = [e for e in EXPERIMENTS if e not in SERA_EXPERIMENTS]
# the score block's keys that filter responses before scoring or judging (dicewf.scoring.finished)
RESPONSE_FILTERS = ("drop_truncated", "strip_whitespace", "min_chars", "max_chars")
MODELS = cfg.evaluated_models(config, OWNERS)  # each trained policy evaluated once
TOY_EVAL = config["eval"]["suite"] == "toy"
# the setting of the single-setting tables and figures (Tables 3, 4, 5, 7; Figures 2, 4)
MAIN_SETTING = config["report"].get("setting") or SETTINGS[0]
if MAIN_SETTING not in SETTINGS:
    raise ValueError(f"report.setting: {MAIN_SETTING!r} is not a configured setting {SETTINGS}")


scattergather:
    split=config["sharding"]["shards"],


wildcard_constraints:
    exp=cfg.alternation(EXPERIMENTS),
    scatteritem=r"\d+-of-\d+",
    hub_model=r"[A-Za-z0-9_.]+(-[A-Za-z0-9_.]+)*--[A-Za-z0-9_.]+(-[A-Za-z0-9_.]+)*(--[\w.]+)?",
    iter=r"[1-9]\d*",
    model=cfg.alternation(MODELS),
    bench="alpaca_eval|arena_hard",
    table=cfg.alternation(list(paper.TABLES) + ["paper_vs_reproduced"]),
    figure=cfg.alternation(list(paper.FIGURES)),


def repo_path(path):
    """A file shipped with the workflow (e.g. workflow/prompts/...): relative paths that do not
    exist in the working directory are taken from the repository."""
    if os.path.isabs(path) or os.path.exists(path):
        return path
    return str(Path(workflow.basedir) / path)


def data_snapshot(name):
    """The downloaded hub snapshot of dataset ``data.<name>.dataset`` (ancient: see model_input)."""

    def path(w):
        return ancient(hub.local_dir(config["data"][name]["dataset"]))

    return path


def dataset_patterns(w):
    """allow_patterns of the data block that names this hub dataset (None: the defaults)."""
    folder = f"{hub.HUB_DIR}/datasets/{w.hub_dataset}"
    for block in (config.get("data") or {}).values():
        if hub.local_dir(block["dataset"]) == folder:
            return block.get("allow_patterns")
    return None


def seeded(block, after="max_tokens"):
    """``block`` with the config's one ``seed`` where its own seed key used to be (after
    ``after``; a sampling block's place by default): every stochastic step draws from it."""
    return seeds.with_seed(block, config["seed"], after)


# each experiment run's seed: the config's, or a replicate's own (dicewf.config.run_seed)
SEEDS = {_name: cfg.run_seed(config, _name) for _name in RUNS}


def run_seed(w):
    """The seed of the job's experiment run (a replicate has its own)."""
    return SEEDS[w.exp]


def run_seeded(w, block, after="max_tokens"):
    """``block`` with the job's experiment-run seed (:func:`run_seed`) where :func:`seeded`
    puts the config's: sampling, ratings, the alpha search and mixing vary by replicate."""
    return seeds.with_seed(block, run_seed(w), after)


def xp(wildcards):
    """The resolved settings of the job's experiment."""
    return XP[wildcards.exp]


def model_input(path):
    """A downloaded base model is ancient(): a fresh download does not rebuild the DAG."""
    return ancient(path) if path.startswith(f"{hub.HUB_DIR}/") else path


# paths are resolved once per (experiment, iteration): the paper's DAG asks for them ~2,000 times
@functools.cache
def policy_of(exp, t):
    return model_input(cfg.policy_path(config, exp, t, OWNERS))


@functools.cache
def reference_of(exp, t):
    return model_input(cfg.reference_path(config, exp, t, OWNERS))


def prev_policy(w):
    """pi_theta^(t-1): what iteration t samples from, scores with, and starts training from."""
    return policy_of(w.exp, int(w.iter) - 1)


def prev_reference(w):
    """pi_ref^(t-1): the reference of the implicit reward at iteration t."""
    return reference_of(w.exp, int(w.iter) - 1)


def train_reference(w):
    """Algorithm 1 line 7, the reference update: iteration t trains against pi_ref^(t) =
    pi_theta^(t-1), the policy it starts from, or against pi_theta^(0) in every iteration for
    `reference: fixed` (the paper's Offline DPO); dicewf.config.reference_path holds the rule."""
    return reference_of(w.exp, int(w.iter))


def reused_ref_column(w):
    """The scores column with log pi_ref^(t) of the samples, or None (dicewf.reflogps)."""
    if not reflogps.reuse_planned(config, w.exp):
        return None
    return reflogps.reused_column(config, w.exp, int(w.iter))


def train_pairs(w):
    """The train job's pairs: with the reference log-probs of every row (the ref_logps job)
    where reuse is planned and some rows lack them, else the mixture itself."""
    name = "train_pairs" if reflogps.needs_fill(config, w.exp, int(w.iter)) else "mixed"
    return f"results/{w.exp}/iter{w.iter}/{name}.parquet"


def generated_pairs(w):
    """D(alpha*) of the iteration, unless gamma = 1 (offline data only: nothing is sampled)."""
    if xp(w)["mix"]["gamma"] >= 1:
        return {}
    return {"pairs": f"results/{w.exp}/iter{w.iter}/pairs.parquet"}


def experiment_offline(w):
    """An experiment's D_offline: the setting's, or its copy with labels swapped
    (noise_fraction, rule noisy_offline)."""
    if xp(w)["noise_fraction"] > 0:  # one copy per setting and noise (dicewf.config.start_owner)
        return f"results/{cfg.start_owner(config, w.exp)}/data/offline_noisy.parquet"
    return setting_offline(w)


def setting_offline(w):
    return cfg.base(config, RUNS[w.exp][0])["offline"]


def sera_models(w):
    """The models SeRA's iteration t scores D_offline under: pi_theta^(t-1) and its reference
    (the score stage's pair), and for Eq. 7 (sera.ensemble_lambda > 0, t >= 2) pi_theta^(t-2)
    and its reference; pi_theta^(0) is the start policy, trained from the SFT model (on the
    noisy D_offline for a noisy run: noisy_start_policy)."""
    t = int(w.iter)
    models = {"policy": policy_of(w.exp, t - 1), "ref": reference_of(w.exp, t - 1)}
    if cfg.sera_ensembles(xp(w), t):
        models |= {"policy2": policy_of(w.exp, t - 2), "ref2": reference_of(w.exp, t - 2)}
    return models


def sera_bootstrap_inputs(w):
    """What SeRA's bootstrapped pairs are built from besides the score stage's rewards: with
    sera.bootstrap dice_alpha, the iteration's D(alpha*) (rule search_alpha); for
    Eq. 7 (the condition of sera_models) the same samples scored under pi_theta^(t-2) and its
    reference (rule sera_scores_prev2), shared as the scores are: the scores' key holds
    pi_theta^(t-1)'s, and so the (t-2) pair's, whole history."""
    t = int(w.iter)
    inputs = {}
    if cfg.sera_ensembles(xp(w), t):
        inputs["scores_prev2"] = f"{cfg.iter_dir(scores_owner(w), t)}/scores_prev2.parquet"
    if xp(w)["sera"]["bootstrap"] == "dice_alpha":  # DICE's D(alpha*) (rule search_alpha)
        inputs["pairs"] = f"results/{w.exp}/iter{t}/pairs.parquet"
    return inputs


@functools.cache
def eval_policy_of(model):
    return model_input(cfg.model_policy(config, model, OWNERS))


def eval_policy(w):
    return eval_policy_of(w.model)


@functools.cache
def eval_sampling_of(model):
    return cfg.eval_sampling(config, model)


def eval_sampling(w):
    """The model's decoding: eval.sampling with its setting's eval.sampling merged over it."""
    return seeded(eval_sampling_of(w.model))


def samples_owner(w):
    return cfg.owners_of(config, w.exp, w.iter, OWNERS).samples


def scores_owner(w):
    return cfg.owners_of(config, w.exp, w.iter, OWNERS).scores


def shard_samples(w):
    """A shard's samples: those of the first experiment with equal start policy and sampling."""
    return f"{cfg.iter_dir(samples_owner(w), w.iter)}/shards/{w.scatteritem}/samples.parquet"


def shard_scores(kind):
    """The scores of every shard of the job's iteration: implicit rewards or the judge's."""

    def paths(w):
        name = "judge_scores" if xp(w)["score"]["method"] == "judge" else "scores"
        pattern = f"results/{w.exp}/iter{w.iter}/shards/{{scatteritem}}/{name}.parquet"
        return gather.split(pattern)

    return paths


def offline_logps(w):
    """SeRA's log-probs of D_offline at iteration t: shared by the runs that score the same
    D_offline under the same models (dicewf.config.Owners.offline), e.g. every SeRA run's
    first iteration on the clean data."""
    owner = cfg.owners_of(config, w.exp, w.iter, OWNERS).offline
    return f"{cfg.iter_dir(owner, w.iter)}/offline_logps.parquet"


def shared_scores(w):
    """Scores of iteration t: shared by experiments with equal samples and scoring settings."""
    return f"{cfg.iter_dir(scores_owner(w), w.iter)}/scores.parquet"


# The agreement rule's declared judge cache: only an API judge has one.
AGREEMENT_JUDGE_CACHE = (
    {}
    if config["agreement"]["judge"] == "gold"
    else {"judge_cache": f"{OWN}/agreement/judge_cache.jsonl"}
)


def agreement_inputs(w):
    """Iteration-1 scores of the agreement experiment (and, with the gold judge, its tasks; and
    the published reward models to score)."""
    exp = cfg.full_name(MAIN_SETTING, config["agreement"]["experiment"])
    if exp not in RUNS:
        raise ValueError(f"agreement.experiment: no experiment {exp!r} to sample tuples from")
    inputs = {"scores": f"{cfg.iter_dir(OWNERS[exp, 1].scores, 1)}/scores.parquet"}
    if config["agreement"]["judge"] == "gold":
        inputs["tasks"] = cfg.base(config, MAIN_SETTING)["prompts"]
    external = config["agreement"]["external_reward_models"].values()
    if external:  # published reward models (Table 5's ERM), in config order
        inputs["external"] = [model_input(hub.local_dir(m["model"])) for m in external]
    return inputs


def reward_model_pairs(w):
    """The IntlRM's training pairs: D_offline of the main setting, or a configured pairs file."""
    pairs = config["agreement"]["reward_model_pairs"]
    return cfg.base(config, MAIN_SETTING)["offline"] if pairs == "offline" else pairs


def train_processes(train, gpu):
    """Training processes of a job with ``gpu`` GPUs, after checking that the block's
    global_batch_size divides over them (dicewf.batching)."""
    processes = batching.processes_of(gpu)
    batching.gradient_accumulation(train, processes)
    return processes


@functools.cache
def caption_of(name):
    """The caption of a table or figure: workflow/report/<name>.rst."""
    return (Path(workflow.basedir) / "workflow" / "report" / f"{name}.rst").read_text().strip()


def table_inputs(w):
    """Exactly the files a table reads (dicewf.paper.needs)."""
    return paper.input_paths(w.table, LAYOUT, OWN)


def figure_inputs(w):
    """Exactly the files a figure reads (dicewf.paper.needs)."""
    return paper.input_paths(w.figure, LAYOUT, OWN)


def sera_figure_inputs(w):
    """Exactly the files SeRA's Figure n reads (dicewf.paper.sera_figures.needs)."""
    return sera_figures.input_paths(f"sera_figure{w.n}", SERA_LAYOUT)


def all_targets():
    # SeRA's toy tables and Figures 2-6 (sera_figures.smk; a placeholder where no SeRA run fills
    # one) read the toy suite's metrics and gold labels; at paper scale SeRA is judged by its own
    # evaluation (sera_eval.smk, target sera_paper)
    tables = [t for t in paper.TABLES if TOY_EVAL or t not in paper.SERA_TABLES]
    targets = [f"{OWN}/tables/{name}.md" for name in tables + ["paper_vs_reproduced"]]
    targets += [f"{OWN}/figures/{name}.png" for name in paper.FIGURES]
    if TOY_EVAL:
        targets += [f"{OWN}/figures/sera_figure{n}.png" for n in range(2, 7)]
        # the paper's claims, each with a verdict (per-prompt judgements: toy suite)
        targets.append(f"{OWN}/tables/claims.md")
    # every configured run is evaluated (once where runs are shared), also those no table shows
    targets += [paper.metrics_path(model) for model in MODELS]
    # every value each experiment ran with, in one file per experiment
    targets += [f"results/{exp}/config.yaml" for exp in EXPERIMENTS]
    if "world" in config:  # each set of samples once, gathered for inspection (toy sizes only)
        targets += sorted(
            {
                f"{cfg.iter_dir(OWNERS[e, t].samples, t)}/samples.parquet"
                for e, t in cfg.iterations(config)
                if cfg.generates_pairs(XP[e])
            }
        )
    if "world" in config:  # the toy world's check that pi_theta^(0)'s implicit reward is useful
        targets.append("results/toy/agreement.json")
    return targets
