"""`python -m pipelines.cli tune`: the validation search of models/search.py on built datasets.

For each dataset: export its `meta_tasks` tensors without the test split to
`PAML_HOME/tuning/<dataset>/tasks/`, run the search into the journal
`PAML_HOME/tuning/<dataset>/journal.log` (or import a journal made on another machine from the
same export), mirror every trial into the DuckDB table `tuning_trials`, and write each method's
best trial to `models/settings/<dataset>.json` (`<dataset>.production.json` for a search under the
production protocol), which the model assets read. docs/tuning.md's
generated part and its plots (docs/tuning/) are rendered from the journals.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import polars as pl

from models.search import INFO_FILE, TENSORS_FILE, JournalError, parse_study_name, tasks_digest
from models.configs import WARM_SPLIT

REPO_ROOT = Path(__file__).resolve().parent.parent
TUNING_DOC = REPO_ROOT / "docs" / "tuning.md"
PLOTS_DIR = REPO_ROOT / "docs" / "tuning"
GENERATED_START = "<!-- generated: everything from here to the end marker is rewritten by the command above -->"
GENERATED_END = "<!-- end of the generated part -->"

TRIAL_SCHEMA = {
    "dataset": pl.String, "protocol": pl.String, "method": pl.String, "trial": pl.Int64, "state": pl.String,
    "value": pl.Float64, "params": pl.String, "steps": pl.List(pl.Int64), "val_losses": pl.List(pl.Float64),
    "seconds": pl.Float64, "started_at": pl.Datetime("us"), "device": pl.String, "threads": pl.Int64,
    "worker": pl.Int64, "is_defaults": pl.Boolean, "retry_of": pl.Int64, "journal_sha256": pl.String,
}


def tuning_dir(home: Path, dataset: str) -> Path:
    """PAML_HOME/tuning/<dataset>: the exported tasks and the journal."""
    return Path(home) / "tuning" / dataset


def journal_path(home: Path, dataset: str) -> Path:
    return tuning_dir(home, dataset) / "journal.log"


def export_tasks(tensors: dict, info: dict, directory: Path, meta_tasks_hash: str, protocol: str = "paper") -> Path:
    """Write the tasks without any test tensor (and without the warm users, which only the
    production protocol trains on); the info names the splits that are there."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    left_out = ("test",) if protocol == "production" else ("test", WARM_SPLIT)
    kept = {k: v.contiguous() for k, v in tensors.items() if k.split("__", 1)[0] not in left_out}
    splits = [s for s in info.get("splits", ("train", "val", "test")) if s not in left_out]
    light = {k: v for k, v in info.items() if k not in ("splits",)}
    save_file(kept, str(directory / TENSORS_FILE))
    (directory / INFO_FILE).write_text(json.dumps({**light, "splits": splits, "meta_tasks_hash": meta_tasks_hash},
                                                  indent=1, sort_keys=True, default=str))
    return directory


def import_journal(source: Path, target: Path, tasks: Path) -> Path:
    """Copy a journal made elsewhere into place after checking it was searched on these tasks."""
    import optuna

    from models.search import journal_storage

    source = Path(source)
    if not source.is_file():
        raise JournalError(f"no journal at {source}")
    digest = tasks_digest(tasks)
    studies = optuna.get_all_study_summaries(journal_storage(source))
    if not studies:
        raise JournalError(f"{source} holds no study")
    for summary in studies:
        theirs = summary.user_attrs.get("tasks_sha256")
        if theirs != digest:
            raise JournalError(f"{source}: study {summary.study_name!r} was searched on other tasks (tensors sha256 "
                             f"{str(theirs)[:12]}, the export here: {digest[:12]}); export again and rerun, or "
                             "import the journal into the home it was exported from")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.import")
    shutil.copyfile(source, staging)
    staging.replace(target)
    return target


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def is_current(name: str) -> bool:
    """Whether a study was searched for a known method in the form this code has (models/search.study_name)."""
    from models.learners import METHODS
    from models.search import study_name

    protocol, method, _ = parse_study_name(name)
    return method in METHODS and study_name(method, protocol) == name


def load_studies(journal: Path, current: bool = True) -> list:
    """The studies of a journal: those of the methods' current forms (`current=False`: the superseded others)."""
    import optuna

    from models.search import journal_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = journal_storage(journal)
    return [optuna.load_study(study_name=s.study_name, storage=storage) for s in optuna.get_all_study_summaries(storage)
            if is_current(s.study_name) == current]


def trial_rows(dataset: str, studies: list, journal_sha256: str) -> pl.DataFrame:
    """One row per trial: the `tuning_trials` table."""
    rows = []
    for study in studies:
        protocol, method, _ = parse_study_name(study.study_name)
        for t in study.get_trials(deepcopy=False):
            steps = sorted(t.intermediate_values)
            seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
            rows.append({
                "dataset": dataset, "protocol": protocol, "method": method, "trial": t.number, "state": t.state.name,
                "value": t.value, "params": json.dumps(t.params, sort_keys=True), "steps": steps,
                "val_losses": [float(t.intermediate_values[s]) for s in steps], "seconds": seconds,
                "started_at": t.datetime_start, "device": t.user_attrs.get("device"), "threads": t.user_attrs.get("threads"),
                "worker": t.user_attrs.get("worker"), "is_defaults": bool(t.user_attrs.get("defaults", False)),
                "retry_of": t.user_attrs.get("retry_of"), "journal_sha256": journal_sha256,
            })
    return pl.DataFrame(rows, schema=TRIAL_SCHEMA)


def best_trials(trials: pl.DataFrame) -> pl.DataFrame:
    """Per (protocol, method): the complete trial with the lowest validation loss (ties: the earlier)."""
    return (trials.filter(pl.col("state") == "COMPLETE").sort("value", "trial")
            .group_by("protocol", "method", maintain_order=True).first().sort("protocol", "method"))


def settings_content(dataset: str, trials: pl.DataFrame, studies: list, journal_sha256: str) -> dict[str, Any]:
    """The settings file: each method's best trial (and its step size's form), the journal's hash, the date of its last trial."""
    from models.learners import method_form

    best = best_trials(trials)
    finished = trials.filter(pl.col("state").is_in(["COMPLETE", "PRUNED"]))
    last = finished["started_at"].max() if finished.height else None
    search = next((s.user_attrs.get("search") for s in studies if s.user_attrs.get("search")), {})
    tasks_sha = next((s.user_attrs.get("tasks_sha256") for s in studies), None)
    return {
        "dataset": dataset,
        "written_by": "python -m pipelines.cli tune (models/search.py)",
        "date": last.date().isoformat() if last else None,
        "journal_sha256": journal_sha256,
        "tasks_sha256": tasks_sha,
        "search": search,
        "selection": "the complete trial with the lowest validation loss (mean query loss of validation users)",
        "methods": {r["method"]: {"trial": r["trial"], "value": r["value"], "params": json.loads(r["params"]),
                                  "protocol": r["protocol"], "form": method_form(r["method"]),
                                  "finished_trials": finished.filter(pl.col("method") == r["method"]).height}
                    for r in best.iter_rows(named=True)},
    }


def with_other_methods(content: dict[str, Any], previous: dict[str, Any] | None, protocol: str = "paper") -> dict[str, Any]:
    """`content` plus the entries of the methods this search did not study, kept from `previous` (the
    `protocol`'s settings file it replaces), each naming the search that chose it (`chosen_by`): searching
    one method (`--methods`) must not drop the others' choices, whose models would fall back to the code
    defaults. An entry searched under another protocol is not kept (older code wrote a production search's
    choice into the paper protocol's file, where the paper protocol's models then used it)."""
    if not previous:
        return content
    origin = {"journal_sha256": previous.get("journal_sha256"), "date": previous.get("date")}
    kept = {method: {**entry, "chosen_by": entry.get("chosen_by") or origin}
            for method, entry in previous.get("methods", {}).items()
            if method not in content["methods"] and entry.get("protocol", protocol) == protocol}
    return {**content, "methods": {**content["methods"], **kept}}


def ingest(dataset: str, journal: Path, store, settings_dir: Path | None = None,
           protocol: str = "paper") -> tuple[pl.DataFrame, Path | None]:
    """Mirror a journal's trials (every protocol's) to `tuning_trials` and write `protocol`'s settings file
    from that protocol's studies (the methods they did not study keep their entries); returns (trials,
    settings path). The other protocol's file is left as it is: its choice has not changed, and its
    recorded journal hash names the search that made it."""
    from models.settings import settings_path, write_settings

    studies = load_studies(journal)
    digest = file_sha256(journal)
    trials = trial_rows(dataset, studies, digest)
    store.record_table("tuning_trials", trials, source="tune", partition=dataset, artifact_id=f"journal:{digest[:20]}")
    searched = trials.filter(pl.col("protocol") == protocol)
    if not searched.filter(pl.col("state") == "COMPLETE").height:
        return trials, None
    path = settings_path(dataset, settings_dir, protocol)
    previous = json.loads(path.read_text()) if path.is_file() else None
    own = [study for study in studies if parse_study_name(study.study_name)[0] == protocol]
    return trials, write_settings(with_other_methods(settings_content(dataset, searched, own, digest), previous, protocol),
                                  dataset, settings_dir, protocol)


# -- docs/tuning.md ------------------------------------------------------------------------


def replace_generated(text: str, generated: str, path: Path) -> str:
    """`text` with the part between the generated markers replaced (markers appended when absent)."""
    if GENERATED_START not in text:
        return text.rstrip("\n") + "\n\n" + GENERATED_START + "\n\n" + generated.strip("\n") + "\n\n" + GENERATED_END + "\n"
    head, rest = text.split(GENERATED_START, 1)
    if GENERATED_END not in rest:
        raise ValueError(f"{path}: the generated part has a start marker but no end marker ({GENERATED_END})")
    tail = rest.split(GENERATED_END, 1)[1]
    return head + GENERATED_START + "\n\n" + generated.strip("\n") + "\n\n" + GENERATED_END + tail


def space_markdown() -> str:
    """The search space as a table (from models/settings.SPACE)."""
    from models.settings import SPACE, knob_exists

    lines = ["| setting | config | range | methods |", "|---|---|---|---|"]
    for k in SPACE:
        span = ", ".join(map(str, k.choices)) if k.kind == "categorical" else f"{k.low:g} to {k.high:g}" + (" (log)" if k.log else "")
        note = "" if knob_exists(k) else " (not in this code yet: not searched)"
        note += f" (only when `{k.requires}` > 0)" if k.requires else ""
        lines.append(f"| `{k.name}` | {k.target} | {span} | {', '.join(k.methods)}{note} |")
    return "\n".join(lines)


def importances(study) -> dict[str, float]:
    """Optuna's fANOVA importance of each parameter ({} when the study is too small)."""
    import optuna

    try:
        return optuna.importance.get_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}


def history_png(dataset: str, trials: pl.DataFrame) -> bytes:
    """Optimization history: every finished trial's value and the best so far, one panel per method."""
    import io

    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = sorted(trials["method"].unique().to_list())
    fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods), 2.8), squeeze=False, sharey=True)
    for ax, method in zip(axes[0], methods):
        part = trials.filter((pl.col("method") == method) & (pl.col("state") == "COMPLETE")).sort("trial")
        if part.height:
            values = part["value"].to_numpy()
            ax.scatter(part["trial"].to_numpy(), values, s=10, label="trial")
            ax.step(part["trial"].to_numpy(), [values[: i + 1].min() for i in range(len(values))], where="post",
                    color="tab:red", label="best so far")
        pruned = trials.filter((pl.col("method") == method) & (pl.col("state") == "PRUNED"))
        ax.set_title(f"{method} ({pruned.height} pruned)", fontsize=9)
        ax.set_xlabel("trial")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[0][0].set_ylabel("validation loss")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{dataset}: optimization history")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def best_trial_text(trial) -> str:
    """'14 (step 0: untrained)' / '13 (step 700)' for an Optuna trial: its number and the step its training
    kept (`best_step`, recorded by models/search.py); '-' for none."""
    if trial is None:
        return "-"
    step = trial.user_attrs.get("best_step")
    if step is None:
        return str(trial.number)
    return f"{trial.number} (step 0: untrained)" if step == 0 else f"{trial.number} (step {step})"


def dataset_markdown(dataset: str, trials: pl.DataFrame, studies: list, plot_name: str | None,
                     superseded: list = (), protocol: str = "paper") -> str:
    """One dataset's budget, best trials, defaults, importances and history plot under one protocol
    (`trials` and `studies` of that protocol)."""
    from models.settings import settings_path

    search = next((s.user_attrs.get("search") for s in studies if s.user_attrs.get("search")), {})
    budget = (f"{search.get('trials')} finished trials per method, seed {search.get('seed')}, protocol "
              f"{search.get('protocol')}, outer-step budget {search.get('max_steps') or 'TrainConfig.max_steps'}, "
              f"evaluation every {search.get('eval_every') or 'TrainConfig.eval_every'} steps, patience "
              f"{search.get('patience') or 'TrainConfig.patience'}; device {search.get('device')}, "
              f"{search.get('threads')} thread(s) per worker") if search else "unknown budget"
    title = dataset if protocol == "paper" else f"{dataset}, {protocol} protocol"
    written = settings_path(dataset, protocol=protocol).relative_to(REPO_ROOT)
    lines = [f"### {title}", "", f"Budget: {budget}. Settings written to `{written}`.", "",
             "| method | trials (complete / pruned / failed) | best trial (its kept step) | validation loss | defaults (trial 0) | chosen settings | seconds (all trials) |",
             "|---|---|---|---|---|---|---|"]
    best = {r["method"]: r for r in best_trials(trials).iter_rows(named=True)}
    recorded = {parse_study_name(s.study_name)[1]: s for s in studies}
    for method in sorted(trials["method"].unique().to_list()):
        part = trials.filter(pl.col("method") == method)
        counts = " / ".join(str(part.filter(pl.col("state") == s).height) for s in ("COMPLETE", "PRUNED", "FAIL"))
        defaults = part.filter(pl.col("is_defaults") & (pl.col("state") == "COMPLETE"))
        default_text = f"{defaults['value'].min():.4f}" if defaults.height else "pruned or not run"
        row = best.get(method)
        params = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in json.loads(row["params"]).items()) if row else ""
        seconds = part["seconds"].sum()
        best_text = f"{row['value']:.4f}" if row else "-"
        trial = recorded[method].trials[row["trial"]] if row and method in recorded else None
        lines.append(f"| {method} | {counts} | {best_trial_text(trial)} | {best_text} | "
                     f"{default_text} | {params} | {seconds:.0f} |")
    lines += ["", "The kept step is the outer step whose validation scoring the trial's value is; step 0 is the untrained "
              "start (the network around the fold-ins, adapted by its inner loop), which a trial keeps when no training "
              "step did better.",
              "", "Parameter importance (Optuna's fANOVA over the complete trials; sums to 1 per method):", "",
              "| method | importance |", "|---|---|"]
    for study in sorted(studies, key=lambda s: s.study_name):
        ranked = importances(study)
        text = ", ".join(f"{k} {v:.2f}" for k, v in ranked.items()) if ranked else "not enough complete trials"
        lines.append(f"| {parse_study_name(study.study_name)[1]} | {text} |")
    if superseded:
        lines += ["", "Superseded studies in the journal (searched for an earlier form of the method's step size; "
                  "not used): " + ", ".join(f"`{s.study_name}` ({len(s.trials)} trials)" for s in superseded) + "."]
    if plot_name:
        lines += ["", f"![{dataset}: optimization history](tuning/{plot_name})"]
    return "\n".join(lines)


def render_tuning_doc(home: Path, datasets: list[str], doc: Path = TUNING_DOC, plots: Path = PLOTS_DIR) -> Path:
    """Rewrite docs/tuning.md's generated part (and its PNGs) from the journals in `home`."""
    sections = ["## The search space (models/settings.py SPACE)", "", space_markdown(), "", "## The studies", ""]
    found = False
    for dataset in datasets:
        journal = journal_path(home, dataset)
        if not journal.is_file():
            sections += [f"### {dataset}", "", "Not searched yet.", ""]
            continue
        studies = load_studies(journal)
        all_trials = trial_rows(dataset, studies, file_sha256(journal))
        superseded = load_studies(journal, current=False)
        # One section per protocol: each protocol's search chose its own file's settings (models/settings.py).
        for protocol in sorted(all_trials["protocol"].unique().to_list()) or ["paper"]:
            trials = all_trials.filter(pl.col("protocol") == protocol)
            plot_name = None
            if trials.filter(pl.col("state") == "COMPLETE").height:
                plots.mkdir(parents=True, exist_ok=True)
                plot_name = f"history_{dataset}.png" if protocol == "paper" else f"history_{dataset}_{protocol}.png"
                (plots / plot_name).write_bytes(history_png(dataset, trials))
            of_protocol = [s for s in studies if parse_study_name(s.study_name)[0] == protocol]
            old = [s for s in superseded if parse_study_name(s.study_name)[0] == protocol]
            sections += [dataset_markdown(dataset, trials, of_protocol, plot_name, old, protocol), ""]
        found = True
    if not found:
        sections += ["No study has been run or imported yet."]
    text = doc.read_text() if doc.is_file() else "# Tuning\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(replace_generated(text, "\n".join(sections), doc))
    return doc


def tuning_doc_written(home: Path) -> str:
    """Render the studies of `home`: into docs/tuning.md when it holds the built-in datasets' studies
    (the doc's subject), else into PAML_HOME/tuning/tuning.md, so that tuning your own dataset, or one
    built-in, never rewrites the repository's record of the others' searches."""
    from assets.specs import DATASETS

    if all(journal_path(home, d).is_file() for d in DATASETS):
        return f"wrote {render_tuning_doc(home, list(DATASETS))}"
    tuned = sorted(path.parent.name for path in (home / "tuning").glob("*/journal.log"))
    lacking = ", ".join(d for d in DATASETS if not journal_path(home, d).is_file())
    doc = render_tuning_doc(home, tuned, home / "tuning" / "tuning.md", home / "tuning" / "plots")
    return f"wrote {doc} (docs/tuning.md is left as it is: this home has no study of {lacking})"


def tune(datasets: list[str], home: Path, load_tasks: Callable[[str], Any], *, methods: list[str], config,
         workers: int = 1, stop_after: float | None = None, import_dir: Path | None = None,
         settings_dir: Path | None = None, log: Callable[[str], None] = print) -> dict[str, Path | None]:
    """Export, search (or import), mirror and write settings for each dataset; returns, by dataset, the
    settings file of `config.protocol` (None when no trial completed)."""
    from models.search import run_search, search_lock
    from pipelines.store import LineageStore

    store = LineageStore(home)
    written = {}
    for dataset in datasets:
        tasks_dir = tuning_dir(home, dataset) / "tasks"
        tensors, info, content_hash = load_tasks(dataset)
        journal = journal_path(home, dataset)
        # Locked before the export: a second `tune` rewrote the tasks in place under the first one's workers,
        # then stopped with a traceback (now one line naming the search that runs).
        with search_lock(journal):
            export_tasks(tensors, info, tasks_dir, content_hash, config.protocol)
            if import_dir is not None:
                import_journal(Path(import_dir) / f"{dataset}.journal", journal, tasks_dir)
                log(f"{dataset}: imported {Path(import_dir) / f'{dataset}.journal'}")
            else:
                run_search(tasks_dir, journal, methods, config, workers, stop_after, log=log, locked=True)
            trials, path = ingest(dataset, journal, store, settings_dir, config.protocol)
        written[dataset] = path
        log(f"{dataset}: {trials.height} trials mirrored to tuning_trials; {config.protocol} protocol's settings: "
            f"{path or 'none (no complete trial)'}")
    return written
