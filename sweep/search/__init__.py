"""The sweepers' wing: every sweeper Hydra can load, and what they share.

    plugin.py         what Hydra loads (light): both sweepers' config schemas and thin classes
    optuna_search.py  the Optuna search (search=optuna): ask, launch, tell; repeats and race=true
    grid_race.py      a grid raced over seeds (search=race): rounds through the launcher
    confirmation.py   a search's end: its leading settings raced over seeds; confirmation.json
    confirm.py        which settings lead, the seeds a budget buys them, the verdict: numbers only
    stopping.py       when a search may stop (stop=auto): a further trial's bound against seed noise
    race.py           the race's state and race.json, and the Optuna race's rule, side by side
    sequential.py     the race's statistics: numbers in, p-values out (no files, no state)
    settings.py       the sweepers' settings: each default once, one check for both
    returns.py        another app's job return as a run's result.json (value, pruned, failed)
    folders.py        the one place that names run folders (trial_0007/seed_1, 3/seed_2)
    lightning.py      a Lightning callback that prunes a trial (for the user's LightningModule)
    pruning.py        two calls any app's task makes to be pruned: report(value, step), should_prune()
    trial_link.py     a job's link back to its trial, for pruning from any process
    round_link.py     a race's run's link to its round: a clear loser's run stops mid-way
    study.py          where a study lives: storages, the study's record in the sweep dir
    borrowed.py       the private insides of Optuna and Hydra this project uses, in one place

Each module imports only those below it in this list (plugin.py imports the searches lazily)."""
