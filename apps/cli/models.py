"""The learn loop from the command line, without Dagster: train, export, evaluate, promote and list models.

Each command calls the same functions as the Dagster assets (`learning`), so a model trained here is
the model the asset would have registered, byte for byte, and records the same events.
"""

from __future__ import annotations

import json
from dataclasses import replace

import click
from rich.table import Table

from apps.cli.common import console, open_catalog, out, sign_act, signer_options
from identity.roles import Action
from identity.signatures import Meaning


@click.group()
def models() -> None:
    """Models: train on a dataset version, export to ONNX, evaluate, promote (quality floor and regression
    gate), list."""


def _say(as_json: bool):
    return (lambda text: console.print(text, highlight=False)) if not as_json else (lambda text: None)


def _emit(as_json: bool, record: dict, text: str) -> None:
    if as_json:
        click.echo(json.dumps(record, default=str))
    else:
        out.print(text)


@models.command("train")
@click.option("--dataset-version", "dataset_version_id", help="dataset version id (default: the latest of "
              "inspection-all)")
@click.option("--model", "which", type=click.Choice(["classifier", "segmenter"]), default="classifier",
              show_default=True)
@click.option("--epochs", type=int, help="default: the training configuration's")
@click.option("--samples-per-epoch", type=int, help="crops per epoch (default: one per training image)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, or cuda / cuda:N for a GPU")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def models_train(dataset_version_id: str | None, which: str, epochs: int | None, samples_per_epoch: int | None,
                 seed: int, device: str, as_json: bool) -> None:
    """Train a model on a dataset version's training split, validate it, and register it (ModelRegistered).
    Training is deterministic: the same version and settings register the same model again, nothing new."""
    from learning.training import MODEL_NAMES, default_params, train_model

    params = default_params(which)
    overrides = {k: v for k, v in (("epochs", epochs), ("samples_per_epoch", samples_per_epoch)) if v}
    params = replace(params, seed=seed, **overrides)
    with open_catalog() as cat:
        trained = train_model(cat, MODEL_NAMES[which], params, _say(as_json),
                              dataset_version_id=dataset_version_id, device=device)
    figures = {k: v for k, v in trained.result.metrics.items() if isinstance(v, int | float)}
    _emit(as_json, {"model_id": trained.model_id, "new": trained.new, "dataset_version_id":
                    trained.dataset_version_id, "seconds": round(trained.result.seconds, 1), "validation": figures},
          f"{trained.model_id}{'' if trained.new else ' (already registered)'} trained on "
          f"{trained.dataset_version_id} in {trained.result.seconds:.0f} s")


@models.command("export")
@click.argument("model_id", required=False)
@click.option("--model", "which", type=click.Choice(["classifier", "segmenter"]), default="classifier",
              show_default=True)
@click.option("--json", "as_json", is_flag=True)
def models_export(model_id: str | None, which: str, as_json: bool) -> None:
    """Export MODEL_ID (default: the latest registered) to ONNX, checked against torch (ModelExported)."""
    from learning.training import MODEL_NAMES, export_model

    with open_catalog() as cat:
        model_id, event, new = export_model(cat, MODEL_NAMES[which], model_id, _say(as_json))
    _emit(as_json, {"model_id": model_id, "onnx_sha256": event.onnx_sha256, "opset": event.opset,
                    "parity_max_abs_diff": event.parity_max_abs_diff, "new": new},
          f"{model_id} → ONNX {event.onnx_sha256[:12]} (parity {event.parity_max_abs_diff:.1e})")


@models.command("evaluate")
@click.argument("model_id", required=False)
@click.option("--min-precision", type=float, default=0.95, show_default=True,
              help="precision floor the operating threshold is chosen for, on the validation split")
@click.option("--json", "as_json", is_flag=True)
def models_evaluate(model_id: str | None, min_precision: float, as_json: bool) -> None:
    """Choose the classifier's operating threshold on its validation split, measure it on the test split and
    record ModelEvaluated; engines built afterwards carry that threshold."""
    from learning.evaluation import EvaluationConfig, evaluate

    with open_catalog() as cat:
        event, extra = evaluate(cat, EvaluationConfig(model_id=model_id, min_precision=min_precision),
                                _say(as_json))
    m = event.metrics
    _emit(as_json, {"model_id": event.model_id, "threshold": event.threshold, "metrics": m,
                    "report": extra["png"]},
          f"{event.model_id}: threshold {event.threshold:.4f} (validation recall "
          f"{m.get('validation_recall', float('nan')):.3f}); test AP {m.get('average_precision', float('nan')):.3f}, "
          f"precision / recall at the threshold {m.get('precision_at_threshold', float('nan')):.3f} / "
          f"{m.get('recall_at_threshold', float('nan')):.3f}\nreport {extra['png']}")


@models.command("promote")
@click.argument("model_id", required=False)
@click.option("--min-validation-recall", type=float, help="quality floor (default: the gate's)")
@click.option("--max-good-parts-rejected", type=float, help="share of good validation parts (default: the gate's)")
@signer_options
@click.option("--json", "as_json", is_flag=True)
def models_promote(model_id: str | None, min_validation_recall: float | None,
                   max_good_parts_rejected: float | None, signer: str, password_stdin: bool, as_json: bool) -> None:
    """Promote MODEL_ID (default: the latest exported classifier) if it is fit (the quality floor) and no worse
    than the champion on history (the regression gate); exit status 1 when refused, with the reasons. The
    promotion is signed by --user (meaning: approved), who re-enters their password before the replay runs."""
    from learning.promotion import ReplayConfig, replay_and_gate

    floor = {k: v for k, v in (("min_validation_recall", min_validation_recall),
                               ("max_good_parts_rejected", max_good_parts_rejected)) if v is not None}
    with open_catalog() as cat:
        signature = sign_act(cat, signer, password_stdin, Meaning.APPROVED, Action.PROMOTE)
        replayed, gate, promoted = replay_and_gate(cat, ReplayConfig(candidate_model_id=model_id, **floor),
                                                   _say(as_json), signed=signature.metadata())
    reasons = gate.reasons if gate else ["already the champion"]
    _emit(as_json, {"model_id": replayed.candidate_model_id if replayed else model_id, "promoted": promoted,
                    "reasons": reasons},
          ("[green]promoted[/]" if promoted else "[red]refused[/]" if gate else "unchanged") + "\n"
          + "\n".join(f"- {r}" for r in reasons))
    if gate is not None and not promoted:
        raise SystemExit(1)


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON lines")
def models_list(as_json: bool) -> None:
    """Registered models, newest first, with their operating threshold and validation figures; the champion
    is starred."""
    from catalog.lineage import CLASSIFIER, champion, list_models

    with open_catalog() as cat:
        rows = list_models(cat)
        served = champion(cat, CLASSIFIER)
    if as_json:
        for r in rows:
            click.echo(json.dumps({"model_id": r.model_id, "model": r.model, "dataset_version_id":
                                   r.dataset_version_id, "exported": r.onnx_uri is not None, "champion":
                                   r.model_id == served, "evaluation": r.evaluation}, default=str))
        return
    table = Table("model", "dataset version", "ONNX", "threshold", "val. recall", "good parts rejected", "test AP")
    for r in rows:
        m = (r.evaluation or {}).get("metrics", {})
        table.add_row(("* " if r.model_id == served else "  ") + r.model_id, r.dataset_version_id,
                      "yes" if r.onnx_uri else "–", _fmt((r.evaluation or {}).get("threshold")),
                      _fmt(m.get("validation_recall")), _fmt(m.get("validation_good_parts_rejected")),
                      _fmt(m.get("average_precision")))
    out.print(table)


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"
