"""The README's main job: `visionledger demo`, the whole loop on a simulated factory with the embedded defaults."""

from __future__ import annotations

import time

import click
from rich.table import Table

from apps.cli.common import console, open_catalog, out, progress_bar
from apps.demo_loop import LoopConfig, run_loop
from assets.storage import instance_home, local_instance
from ingestion.simulated_factory import SIZE_PRESETS

# The commands the report ends with, as a fresh clone runs them after `make demo` (README: "the command is
# .venv/bin/visionledger").
VISIONLEDGER = ".venv/bin/visionledger"


@click.command()
@click.option("--days", default=6, show_default=True, help="days of production to simulate")
@click.option("--history-days", default=4, show_default=True,
              help="of those, the first days delivered with labels; the rest are served through the API")
@click.option("--size", default="small", show_default=True, type=click.Choice(sorted(SIZE_PRESETS)))
@click.option("--seed", default=0, show_default=True)
@click.option("--image-size", default=512, show_default=True)
@click.option("--epochs", default=LoopConfig.epochs, show_default=True, help="training epochs of each classifier")
def demo(days: int, history_days: int, size: str, seed: int, image_size: int, epochs: int) -> None:
    """The whole loop: simulate a factory; ingest and label its first days; publish a dataset version; train,
    export, evaluate and promote a classifier and build its engine; serve the following days through the
    HTTP API; import their labels and correct disagreements; report each day's drift and breakdowns; queue
    images for review, with their heatmaps; retrain on a new dataset version; regression-test the candidate
    against the champion and promote it if it passes. The assets' stages run as Dagster runs on the instance
    under <home>/dagster, which `make dagster` opens. Safe to run again: nothing is appended twice."""
    config = LoopConfig(days=days, history_days=history_days, size=size, seed=seed, image_size=image_size,
                        epochs=epochs)
    started = time.perf_counter()
    with open_catalog() as cat, local_instance(cat.settings) as instance:
        console.rule("visionledger demo")
        report = run_loop(cat, instance, config, lambda line: console.print(line, highlight=False),
                          progress=progress_bar)
        with progress_bar("lake sync") as update:
            lake = cat.sync_lake(progress=update)
        head = cat.head()
        quarantined = cat.lake.quarantined()
        runs = instance.get_runs_count()
        dagster_home = instance_home(cat.settings)
    f, first, candidate, served = report.figures, report.figures["first"], report.figures["candidate"], \
        report.figures["served"]
    table = Table(title="what happened", show_header=False)
    table.add_row("history", f"{', '.join(f['history_days'])}: {f['history_images']} images ingested, "
                  f"{f['history_labels']} labels")
    table.add_row("quarantined", f"{sum(quarantined.values())} rows (ImageRejected: "
                  + (", ".join(f"{n} {reason}" for reason, n in quarantined.items()) or "none") + ")")
    table.add_row("first model", f"{first['model']} on {first['dataset_version']} ({first['images']} images): "
                  f"AP {_num(first['average_precision'])}, recall at P ≥ 0.95 {_num(first['recall_at_p95'])}")
    fitness = "[red]UNPROMOTED: no model passed the quality floor[/]" if first["serving_unfit"] else "promoted"
    table.add_row("engine served", f"{first['engine_in_service'][:12]} (ONNX Runtime, CPU) of "
                  f"{first['serving_model']}, {fitness}; threshold {_num(first['threshold'], 3)} (validation "
                  f"recall {_num(first['validation_recall'])}, good parts rejected "
                  f"{_pct(first['validation_good_parts_rejected'])})")
    table.add_row("served through the API", f"{', '.join(f['served_days'])}: {served['images']} images, "
                  f"{served['refused']} refused, {served['parts']} parts, {served['rejected_parts']} rejected; "
                  f"p50 {served['p50_ms']} ms an image")
    table.add_row("served parts against the truth", f"{served['defective_parts']} really defective: part recall "
                  f"{_num(served['part_recall'])}, good parts rejected {_pct(served['good_parts_rejected'])}")
    table.add_row("human verdicts", f"{f['later_labels']} labels arrived; a reviewer settled "
                  f"{f['reviewer_corrections']} disagreements; {f['review_queue']} images queued for review")
    table.add_row("candidate", f"{candidate['model']} on {candidate['dataset_version']} ({candidate['images']} "
                  f"images): AP {_num(candidate['average_precision'])}, recall at P ≥ 0.95 "
                  f"{_num(candidate['recall_at_p95'])}")
    table.add_row("regression gate", candidate["gate"] or "nothing to replay: the candidate is the champion")
    table.add_row("champion / engine in service", f"{f['champion']} / {candidate['engine_in_service'][:12]}")
    excluded = f["excluded"]
    table.add_row(f"excluded {excluded['line']} {excluded['day']} (lamp too dim)",
                  f"{excluded['newly']} newly, {excluded['in_all']} in all")
    table.add_row("catalog / lake", f"{head:,} events / {lake.end:,} mirrored")
    table.add_row("Dagster", f"{runs} runs on the instance in {dagster_home}")
    table.add_row("seconds", ", ".join(f"{k} {v}" for k, v in report.seconds.items())
                  + f"; {time.perf_counter() - started:.0f} in all")
    out.print(table)
    out.print(f"next: {VISIONLEDGER} users add NAME --name 'Full Name' --role analyst, then {VISIONLEDGER} app  "
              "(the Streamlit app on what this built, logged in as NAME) | make dagster  "
              f"(the Dagster UI on its assets) | {VISIONLEDGER} tokens issue --line line1 --station st1, then "
              f"{VISIONLEDGER} serve --engine {candidate['engine_in_service']} | "
              f"{VISIONLEDGER} trace part {served['example_part'] or '<part id>'} --report trace.html", soft_wrap=True)


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"
