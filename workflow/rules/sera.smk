# One SeRA iteration t of experiment exp (`method: sera`; docs/sera.md, dicewf.sera), on the
# stages it shares with DICE: sample -> score (the sample and score rules, with the sera block's
# decoding and beta) -> sera_offline_logps -> sera_mix -> train (the train rule). pi_theta^(0),
# the start policy (DPO from the SFT model on D_offline), is SeRA's t = 0 model; iteration t
# selects by pi_theta^(t-1) against its own reference, the score stage's two models.


rule sera_offline_logps:
    """Section 3.2's scores: log pi(y|x) of every D_offline pair's chosen and rejected response
    under pi_theta^(t-1) and its reference (and, for Eq. 7, pi_theta^(t-2) and its reference),
    tokenized as TRL tokenizes (dicewf.reflogps.pair_logps). pi_theta^(t-1) is iteration t's
    train reference: sera_mix hands its log-probs to training."""
    input:
        unpack(sera_models),
        pairs=experiment_offline,
    output:
        logps=ensure("results/{exp}/iter{iter}/offline_logps.parquet", non_empty=True),
    log:
        "logs/{exp}/iter{iter}/sera_offline_logps.log",
    benchmark:
        "results/benchmarks/{exp}/iter{iter}/sera_offline_logps.tsv"
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
        "../scripts/sera_offline_logps.py"


rule sera_scores_prev2:
    """Eq. 7 for the bootstrapped pairs: the iteration's scored samples (the score stage's
    responses, filtered already) scored again with DICE's score stage (dicewf.scoring.score),
    under pi_theta^(t-2) against its reference, so that sera_mix pairs each prompt's best and
    worst response by lambda r_(t-2) + (1 - lambda) r_(t-1). Planned where the offline selection
    mixes the two pairs too (sera.ensemble_lambda > 0, t >= 2: sera_bootstrap_inputs)."""
    input:
        scores=shared_scores,
        policy=lambda w: policy_of(w.exp, int(w.iter) - 2),
        reference=lambda w: reference_of(w.exp, int(w.iter) - 2),
    output:
        scores=ensure("results/{exp}/iter{iter}/scores_prev2.parquet", non_empty=True),
    log:
        "logs/{exp}/iter{iter}/sera_scores_prev2.log",
    benchmark:
        "results/benchmarks/{exp}/iter{iter}/sera_scores_prev2.tsv"
    wildcard_constraints:
        iter=r"[2-9]|[1-9]\d+",  # pi_theta^(t-2) exists
    conda:
        "../../envs/sampling.yaml"
    threads: MODEL_THREADS
    resources:
        gpu=1,
        mem_mb=64000,
        runtime=120,
        cpus_per_task=8,
    params:
        # the score rule's settings: the same beta, filters and backend
        beta=lambda w: xp(w)["train"]["beta"],
        score=lambda w: {k: v for k, v in xp(w)["score"].items() if k not in ("method", "judge")},
        engine=lambda w: (config["sampler"]["vllm"] if xp(w)["score"]["backend"] == "vllm" else {}),
    script:
        "../scripts/sera_scores_prev2.py"


rule sera_mix:
    """D_t (Sections 3.2-3.4): the offline pairs with the highest implicit reward margins (Eq. 7
    ensemble), each prompt's best and worst sample by implicit reward (Eq. 7's ensemble of the
    two policies' rewards where it applies: sera_scores_prev2; bootstrapped pairs, the highest
    margins kept), mixed (dicewf.sera.select_offline, mix_iteration). Every row carries
    the train reference's log-probs, so no ref_logps job runs. selection.json holds the counts
    and, for noisy or gold-labelled offline pairs, the selection's precision and recall."""
    input:
        unpack(sera_bootstrap_inputs),
        offline=offline_logps,
        scores=shared_scores,
    output:
        mixed=ensure("results/{exp}/iter{iter}/mixed.parquet", non_empty=True),
        selection=ensure("results/{exp}/iter{iter}/offline_selection.parquet", non_empty=True),
        report=paper.SELECTION,
    log:
        "logs/{exp}/iter{iter}/sera_mix.log",
    wildcard_constraints:
        exp=cfg.alternation(SERA_EXPERIMENTS),
    conda:
        "../../envs/analysis.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
        cpus_per_task=1,
    params:
        sera=lambda w: {
            k: xp(w)["sera"][k]
            for k in (
                "selection",
                "selection_proportion",
                "generated_proportion",
                "ensemble_lambda",
            )
        },
        beta=lambda w: xp(w)["train"]["beta"],
        # DPO's implicit reward, or SimPO's where the experiment trains with it (trainer cpo)
        reward=lambda w: cfg.sera_reward(xp(w)),
        seed=run_seed,
        iteration=lambda w: int(w.iter),  # the shuffle is drawn anew each iteration
        # the scores column holding log pi_ref^(t), also put on the offline pairs
        ref_logps=reused_ref_column,
    script:
        "../scripts/sera_mix.py"
