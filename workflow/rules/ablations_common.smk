# Ablation settings (dualrs.plan): value spellings in paths, which runs an ablation value reuses, CLI arguments;
# the shard tables of a merge.
from dualrs.plan import ABLATIONS, ESTIMATOR_ABLATIONS

planned(PLAN.check_ablations)()

ablation_row = planned(PLAN.ablation_row)
ablation_values = planned(PLAN.ablation_values)
ablation_labels = planned(PLAN.ablation_labels)
ablation_label_args = planned(PLAN.ablation_label_args)
ablation_model_args = planned(PLAN.ablation_model_args)
ablation_init_weights = planned(PLAN.ablation_init_weights)
ablation_sigma_e = planned(PLAN.ablation_sigma_e)
ablation_classifiers = planned(PLAN.ablation_classifiers)
ablation_classifier_args = planned(PLAN.ablation_classifier_args)
ablation_estimator = PLAN.ablation_estimator
ablation_certificates = PLAN.ablation_certificates
ablation_levels = PLAN.ablation_levels
ablation_training_args = PLAN.ablation_training_args
ablation_tables = PLAN.ablation_tables


def label_sampling_args(wildcards):
    """The experiment's label settings and this job's shard, with n = the ablated value."""
    settings = exp(wildcards)["label"]
    return PLAN.sampling_flags(
        wildcards.experiment, settings, wildcards.shard, wildcards.value
    )


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
