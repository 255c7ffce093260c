"""`python -m pipelines.cli tune`: the validation search of models/tuning.py on built datasets.

Results go to docs/tuning/<dataset>.json (every trial) and docs/tuning/<dataset>.md (the
same as tables); copy each method's chosen settings into models/tuned.py (a test checks
that the two agree).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from models.learners import METHODS, LearnerConfig
from models.training import TrainConfig
from models.tuned import TUNED_EPOCHS
from models.tuning import Trial, best_trial, default_settings, draw_settings, run_trial, search_space

RESULTS_DIR = Path(__file__).resolve().parent.parent / "docs" / "tuning"


def tune_dataset(data, dataset: str, trials: int, epochs: int = TUNED_EPOCHS, seed: int = 0,
                 methods: tuple[str, ...] = tuple(METHODS), log: Callable[[str], None] = print) -> dict:
    """Search every method on `data` with the same budget; return the JSON-ready results."""
    learner, train_config = LearnerConfig(), TrainConfig(epochs=epochs, seed=seed)
    results: dict = {"dataset": dataset, "trials_per_method": trials, "epochs": epochs, "seed": seed,
                     "selection": "lowest validation loss (mean query loss of validation users) over epochs",
                     "methods": {}}
    for method in methods:
        done: list[Trial] = []
        for index, settings in enumerate(draw_settings(method, trials, seed, default_settings(method, learner, train_config))):
            trial = run_trial(method, index, settings, data, learner, train_config)
            done.append(trial)
            log(f"{dataset} {method} trial {index}: {settings} -> val {trial.val_loss:.4f} "
                f"(epoch {trial.best_epoch}, {trial.seconds:.0f} s)")
        chosen = best_trial(done)
        results["methods"][method] = {
            "space": {k: list(v) for k, v in search_space(method).items()},
            "trials": [asdict(t) for t in done],
            "chosen": chosen.settings,
        }
    return results


def results_markdown(results: dict) -> str:
    """Every trial as a table per method, the chosen one in bold."""
    lines = [f"# Validation search: {results['dataset']}", "",
             f"{results['trials_per_method']} trials per method (trial 0 = code defaults), "
             f"{results['epochs']} epochs each, seed {results['seed']}; selection: {results['selection']}.", ""]
    for method, entry in results["methods"].items():
        axes = list(entry["space"])
        lines += [f"## {method}", "", "| trial | " + " | ".join(axes) + " | val loss | best epoch | seconds |",
                  "|---" * (len(axes) + 4) + "|"]
        for trial in entry["trials"]:
            mark = "**" if trial["settings"] == entry["chosen"] else ""
            cells = [str(trial["settings"][a]) for a in axes]
            lines.append(f"| {mark}{trial['index']}{mark} | " + " | ".join(cells)
                         + f" | {mark}{trial['val_loss']:.4f}{mark} | {trial['best_epoch']} | {trial['seconds']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def write_results(results: dict, directory: Path = RESULTS_DIR) -> tuple[Path, Path]:
    """Write <dataset>.json and <dataset>.md under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / f"{results['dataset']}.json"
    md_path = directory / f"{results['dataset']}.md"
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    md_path.write_text(results_markdown(results))
    return json_path, md_path
