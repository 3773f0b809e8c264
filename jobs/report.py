"""A run told back to whoever started it: the JSON body (HTTP, `--json`) and the text summary (shell, admin)."""

from __future__ import annotations

from typing import Any

from jobs.models import JobRun, Status
from jobs.registry import JOBS
from jobs.timefmt import utc


def counters(run: JobRun) -> dict[str, Any]:
    """The run's counters in its job's declared order (the database keeps no order)."""
    job = JOBS.get(run.job)
    return job.ordered(run.counters) if job else dict(run.counters)


def kind(run: JobRun, *, whole: bool = False, dry: bool = True) -> str:
    """What kind of run it was, in words: `dry run`, then the part of the work it was narrowed to
    (`shop 1a2b3c4d…`), or else what the job calls it (`incremental`, `full pass`: the declaration's
    `kind`); `full` for a job that names no kinds. `whole`: identifiers uncut (to compare runs by kind);
    `dry`: whether to say `dry run`."""
    job = JOBS.get(run.job)
    words = ["dry run"] if dry and run.params.get("dry_run") else []
    names = job.form.scope if job else ()
    scope = [f"{name} {value if whole else short(value)}" for name in names if (value := run.params.get(name))]
    if scope or job is None or job.kind is None:
        return ", ".join(words + scope) or "full"
    return ", ".join([*words, job.kind(run.params, run.counters)])


def short(value: object) -> str:
    """A long identifier (a UUID) cut to its first 8 characters: enough to tell runs apart in a list."""
    text = str(value)
    return text if len(text) <= 12 else text[:8] + "…"


def body(run: JobRun) -> dict[str, Any]:
    head = {"job": run.job, "runId": run.pk, "status": run.status}
    if run.status == Status.SKIPPED:
        held = {"held": run.held} if run.held else {}
        return {**head, "skipped": True, "reason": "locked", "heldBy": run.held_by, **held}
    if run.status == Status.FAILED:
        return {**head, "error": "Job failed; the traceback is on the run in the admin."}
    dry_run: dict[str, Any] = {"dryRun": True} if run.params.get("dry_run") else {}
    return {**head, **dry_run, **counters(run), "errors": run.errors}


def summary(run: JobRun, max_errors: int | None = None) -> str:
    """The run in a few lines: status and time, its counters, and its errors (the first `max_errors` of them)."""
    named = kind(run, dry=False)  # a dry run says so below
    what = f"run #{run.pk}" + ("" if named == "full" else f", {named}")
    head = f"{run.job}: {run.status} in {run.duration_ms} ms ({what}, started {utc(run.started_at, seconds=True)})"
    if run.status == Status.SKIPPED:
        return f"{head}: {run.skip_reason}"
    if run.status == Status.FAILED:
        reason = run.errors[0] if run.errors else "no reason recorded"
        return f"{head}\n  {reason}\n  the full traceback is stored on run #{run.pk}"
    numbers = "  ".join(f"{name} {value}" for name, value in counters(run).items())
    shown = run.errors[:max_errors] if max_errors is not None else run.errors
    errors = "".join(f"\n  error: {error}" for error in shown) or "\n  errors: none"
    if len(shown) < len(run.errors):
        errors += f"\n  and {len(run.errors) - len(shown):,} more errors on the run's page"
    dry = " (dry run, rolled back)" if run.params.get("dry_run") else ""
    return f"{head}{dry}\n  {numbers}{errors}"
