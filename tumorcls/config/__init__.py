"""The configuration schema: every key of every config group of ``conf/`` (and of ``conf/export.yaml``), with its
type, range or choices and its default, and the one checker both the scripts and the Python API go through.

It sits below every stage (it imports no other part of tumorcls but ``errors`` and ``labels``) and loads neither
torch nor Lightning, so that ``train.py`` and ``export.py`` can check the command line before Hydra composes
(tumorcls.config.command_line) without slowing ``--help``; a stage's code takes its defaults and choices from
here (``tumorcls.data.datamodule``, ``tumorcls.models.settings``, ``tumorcls.export.run``).

- ``rules``: the vocabulary of a key's rule (an integer in a range, one of some choices...) and ConfigError.
- ``data``, ``model``, ``train``, ``export``: the schema of each group, as frozen dataclasses.
- ``check``: a config (or keyword arguments) against a schema: unknown keys, rules, relations between keys.
- ``targets`` and ``annotations``: the open groups, whose keys are a ``_target_``'s parameters.
- ``command_line``: overrides checked against the schema before Hydra composes.
"""
