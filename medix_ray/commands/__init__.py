"""The `medix-ray` subcommands, one module per product area; `medix_ray/cli.py` assembles them.

    common.py     the options every command shares (--config and overrides, --verbose) and the console start
    models.py     medix-ray models list | prepare; medix-ray config show
    data.py       medix-ray data validate | preview; medix-ray generate
    rewards.py    medix-ray score; medix-ray serve-rewards
    train.py      medix-ray train; medix-ray export
    evaluate.py   medix-ray evaluate

Each module's `register_*` functions add its subcommands (arguments, help, and the `cmd_*` function they run)
to the parser's subcommands; the functions import what they need when they run, so `--help` stays fast.
"""
