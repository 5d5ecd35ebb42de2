# params.yaml, the file `dvc exp run -S KEY=VALUE` writes: its values override config/config.yaml's, and
# the command line's --config and --configfile override both. A null key (the file lists the documented
# ones) keeps config/config.yaml's value, or the schema's default.
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config

DVC_PARAMS = Path("params.yaml")


def set_values(node):
    """``node`` without its null keys and the mappings they leave empty."""
    if not isinstance(node, dict):
        return node
    kept = {key: set_values(value) for key, value in node.items() if value is not None}
    return {key: value for key, value in kept.items() if value != {}}


def dvc_params(path):
    """The values set in ``path``; one error when it is not a mapping of config keys."""
    params = yaml.safe_load(path.read_text())
    if not isinstance(params, dict):
        raise WorkflowError(
            f"{path}: expected a mapping of config keys (as config/config.yaml), got {params!r}"
        )
    return set_values(params)


if DVC_PARAMS.is_file():
    update_config(config, dvc_params(DVC_PARAMS))
    update_config(config, workflow.config_settings.overwrite_config)
