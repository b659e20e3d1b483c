# Downloads are their own rules: hub models named hf://ORG/NAME[@REV] in config land here.


rule download_model:
    output:
        model=directory("resources/hub/{hub_model}"),
    log:
        "logs/download/{hub_model}.log",
    localrule: True  # compute nodes often have no internet; the login node downloads
    conda:
        "../../envs/training.yaml"
    params:
        spec=lambda w: hub.spec_of(w.hub_model),
    script:
        "../scripts/download_model.py"
