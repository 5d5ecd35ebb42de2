# Ablations (dualrs.plan): value spellings in paths, which runs an ablation value reuses, the shard tables of a
# merge; an ablation job's settings are those of the experiment's plan with one setting overridden (plan_of).
from dualrs.plan import ABLATIONS, ESTIMATOR_ABLATIONS, LABEL_ABLATIONS

planned(PLAN.check_ablations)()

ablation_row = planned(PLAN.ablation_row)
ablation_values = planned(PLAN.ablation_values)
ablation_labels = planned(PLAN.ablation_labels)
ablation_estimator = PLAN.ablation_estimator
ablation_certificates = PLAN.ablation_certificates
ablation_reference = PLAN.ablation_reference
ablation_tables = PLAN.ablation_tables


def ablation_shard_tables(stage):
    """Input function: the tables {folder}/shards/{name}_shard<k>.tsv (under ablations/),
    k < the shard count of ``stage`` (labels, certify), that make up {folder}/{name}.tsv.
    """

    def tables(wildcards):
        return [
            f"results/{wildcards.experiment}/ablations/{wildcards.folder}/shards/{wildcards.name}_shard{k}.tsv"
            for k in range(num_shards(wildcards.experiment, stage))
        ]

    return tables
