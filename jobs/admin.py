"""Staff's view of the jobs: the overview (admin/jobs/), the run ledger, and Run now."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import DateTimeField, Field, Model, QuerySet
from django.forms import BoundField, ModelChoiceField, TextInput
from django.forms import Field as FormField
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_POST

from jobs import report
from jobs.forms import ParamError, clean
from jobs.health import describe, ledger_began, overview, reason, week
from jobs.models import JobRun, Status, Trigger
from jobs.registry import JOBS, Job
from jobs.runner import run_job
from jobs.timefmt import age, moment_in, utc, when

HEADLINE = 3  # counters shown in the list
STRIP = 20  # runs in the overview's strip
CHOICES_MAX = 50  # rows a Run now menu lists; more are typed in by id
SAME_KIND = 100  # earlier successes a run's page looks through for one of its own kind
NONE = mark_safe("<em>none</em>")
COLOURS = {
    Status.RUNNING: "#1d4ed8",
    Status.SUCCEEDED: "#15803d",
    Status.PARTIAL: "#b45309",
    Status.FAILED: "#b91c1c",
    Status.SKIPPED: "#4b5563",
    Status.ABANDONED: "#7e22ce",
}


class TimesInUTCAdmin(admin.ModelAdmin):
    """A ModelAdmin for any app whose times read as the jobs' pages do.

    Django shows every model time in project/formats' format (`2026-12-02 04:34 UTC`) on its own; the
    list columns named in `ages` also say how long ago, or how soon, each is (`2026-12-02 04:34 UTC,
    3 h ago`), and a form's time fields say they are in UTC.
    """

    ages: tuple[str, ...] = ()

    def get_list_display(self, request: HttpRequest) -> list[str | Callable[[Any], str | bool]]:
        shown = super().get_list_display(request)
        return [_with_age(self.model, name) if isinstance(name, str) and name in self.ages else name for name in shown]

    def formfield_for_dbfield(self, db_field: Field, request: HttpRequest, **kwargs: Any) -> FormField | None:
        formfield = super().formfield_for_dbfield(db_field, request, **kwargs)
        if isinstance(db_field, DateTimeField) and formfield is not None:
            formfield.help_text = " ".join(filter(None, [str(formfield.help_text or ""), "In UTC."]))
        return formfield


def _with_age(model: type[Model], name: str) -> Callable[[Model], str]:
    """A list column for the time field `name`: the time, and how long ago (or how soon) it is."""

    @admin.display(description=str(getattr(model._meta.get_field(name), "verbose_name", name)), ordering=name)
    def column(obj: Model) -> str:
        return when(getattr(obj, name))

    column.__name__ = name  # the column's CSS class, field-<name>, as for the field itself
    return column


def badge(status: str) -> SafeString:
    """A coloured badge that also says the status in words (colour is never the only signal)."""
    colour = COLOURS.get(status, "#4b5563")  # type: ignore[call-overload]
    return format_html(
        '<span class="run-badge" style="background:{};color:#fff;padding:2px 8px;border-radius:9px;'
        'font-weight:600;white-space:nowrap">{}</span>',
        colour,
        status,
    )


def headline(run: JobRun) -> str:
    """The first counters in their declared order, and any work left undone."""
    numbers = [(key, value) for key, value in report.counters(run).items() if isinstance(value, int)]
    shown = numbers[:HEADLINE] + [(key, value) for key, value in numbers[HEADLINE:] if key == "remaining" and value]
    return " · ".join(f"{key} {value:,}" for key, value in shown)


def timestamp(moment: datetime | None) -> str:
    """A run's start or end, to the second: 2026-11-30 09:23:05 UTC (jobs.timefmt, as every time on these pages)."""
    return utc(moment, seconds=True)


def when_html(moment: datetime, now: datetime, *, seconds: bool = False) -> SafeString:
    """timefmt.when for a narrow cell: the time itself never breaks across lines, its age may go to the next."""
    return format_html('<span class="when">{}</span>, {}', utc(moment, seconds=seconds), age(moment, now))


def duration(ms: int | None) -> str:
    if ms is None:
        return "-"
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.1f} s" if ms < 120_000 else f"{ms // 60_000} min"


def how_long(run: JobRun) -> str:
    """How long the run took; unknown for an abandoned one (its process died, nobody saw when)."""
    return "unknown" if run.status == Status.ABANDONED else duration(run.duration_ms)


def ended(run: JobRun, *, with_age: bool = False) -> str:
    """When the run ended; for an abandoned run, when its process was last seen (it never said it ended)."""
    if run.finished_at is None:
        return "-"
    text = when(run.finished_at, seconds=True) if with_age else timestamp(run.finished_at)
    return f"last seen {text}" if run.status == Status.ABANDONED else text


class ReadOnly:
    """Written by the system, never by hand: nobody adds, edits or deletes a row (the ledger, the outbox, derived
    data)."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class JobFilter(admin.SimpleListFilter):
    """The registry's jobs, without a DISTINCT over the whole table (the ledger, the outbox)."""

    title = "job"
    parameter_name = "job"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name) for name in JOBS]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(job=self.value()) if self.value() else queryset


@admin.register(JobRun)
class JobRunAdmin(ReadOnly, admin.ModelAdmin):  # only the prune-job-runs job deletes runs
    list_display = [
        "run", "status_badge", "job", "kind", "trigger", "started", "took", "counters_headline", "error_count", "why",
    ]  # fmt: skip
    list_display_links = ["run"]
    list_filter = [JobFilter, "status", "trigger", "started_at"]
    search_fields = ["errors"]
    ordering = ["-started_at", "-id"]
    list_per_page = 50
    show_full_result_count = False
    fields = [
        "status_badge", "why", "job", "kind", "trigger", "triggered_by", "started_on_page", "finished", "took",
        "lock_id", "params_table", "counters_table", "errors_list", "traceback_text", "neighbours",
    ]  # fmt: skip

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        if not search_term:
            return queryset, False
        return queryset.filter(errors__icontains=search_term), False

    @admin.display(description="run", ordering="-id")
    def run(self, obj: JobRun) -> str:
        return f"#{obj.pk}"

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: JobRun) -> SafeString:
        return badge(obj.status)

    @admin.display(description="kind")
    def kind(self, obj: JobRun) -> str:
        """incremental, full pass, shop 1a2b3c4d…, dry run: a dry or narrowed run never counts for the job's health."""
        return report.kind(obj)

    @admin.display(description="why")
    def why(self, obj: JobRun) -> str:
        """Why the run did not succeed, in one line."""
        if obj.status == Status.SKIPPED:
            return obj.skip_reason
        text = reason(obj) or "-"
        return text if len(text) <= 120 else text[:119] + "…"

    @admin.display(description="started", ordering="started_at")
    def started(self, obj: JobRun) -> str:
        return timestamp(obj.started_at)

    @admin.display(description="started")
    def started_on_page(self, obj: JobRun) -> str:
        return when(obj.started_at, seconds=True)

    @admin.display(description="finished")
    def finished(self, obj: JobRun) -> str:
        return ended(obj, with_age=True)

    @admin.display(description="duration", ordering="duration_ms")
    def took(self, obj: JobRun) -> str:
        return how_long(obj)

    @admin.display(description="counters")
    def counters_headline(self, obj: JobRun) -> str:
        return headline(obj)

    @admin.display(description="triggered by")
    def triggered_by(self, obj: JobRun) -> str:
        who = f"{obj.get_trigger_display()}"
        if obj.user_id:
            who += f" by {obj.user}"
        return f"{who} ({obj.origin})" if obj.origin else who

    @admin.display(description="parameters")
    def params_table(self, obj: JobRun) -> SafeString:
        """The parameters as recorded (JSON); a time reads as every time here does, to the second."""
        rows = [
            (key, utc(moment, seconds=True) if (moment := moment_in(value)) else json.dumps(value))
            for key, value in obj.params.items()
        ]
        return _table(["parameter", "value"], rows)

    @admin.display(description="counters")
    def counters_table(self, obj: JobRun) -> SafeString:
        """The counters beside those of the last success of the same kind: an incremental run is compared
        with an incremental run, not with the weekly full pass."""
        if not obj.counters:
            return NONE
        previous = self._previous_of_kind(obj)
        before = previous.counters if previous else {}
        rows = []
        for key, value in report.counters(obj).items():
            old = before.get(key)
            rows.append((key, _number(value), _number(old) if previous else "-", _change(value, old)))
        heading = f"previous {report.kind(obj)} success" + (f" (#{previous.pk})" if previous else "")
        return _table(["counter", "this run", heading, ""], rows)

    @admin.display(description="errors")
    def errors_list(self, obj: JobRun) -> SafeString:
        if not obj.errors:
            return NONE
        return format_html("<ol>{}</ol>", format_html_join("", "<li><code>{}</code></li>", ((e,) for e in obj.errors)))

    @admin.display(description="traceback")
    def traceback_text(self, obj: JobRun) -> SafeString:
        if not obj.traceback:
            return NONE
        return format_html('<pre style="white-space:pre-wrap">{}</pre>', obj.traceback)

    @admin.display(description="same job")
    def neighbours(self, obj: JobRun) -> SafeString:
        links = []
        for label, run in (("previous run", self._previous(obj)), ("next run", self._next(obj))):
            if run is not None:
                url = reverse("admin:jobs_jobrun_change", args=[run.pk])
                links.append(format_html('<a href="{}">{} #{}</a> ({})', url, label, run.pk, run.status))
        runs = reverse("admin:jobs_jobrun_changelist") + f"?job={obj.job}"
        links.append(format_html('<a href="{}">all {} runs</a>', runs, obj.job))
        return format_html_join(" · ", "{}", ((link,) for link in links))

    def _previous(self, obj: JobRun, **filters: Any) -> JobRun | None:
        return JobRun.objects.filter(job=obj.job, id__lt=obj.pk, **filters).order_by("-id").first()

    def _previous_of_kind(self, obj: JobRun) -> JobRun | None:
        """The last success of the same kind among the SAME_KIND before it (one query: a kind is named in Python)."""
        mine = report.kind(obj, whole=True)
        earlier = JobRun.objects.filter(job=obj.job, id__lt=obj.pk, status=Status.SUCCEEDED).order_by("-id")
        return next((run for run in earlier[:SAME_KIND] if report.kind(run, whole=True) == mine), None)

    def _next(self, obj: JobRun) -> JobRun | None:
        return JobRun.objects.filter(job=obj.job, id__gt=obj.pk).order_by("id").first()

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        run = self.get_object(request, unquote(object_id))  # None for any id that is not a run's, as Django's own
        job = JOBS.get(run.job) if run else None
        again = None
        if run and job and request.user.has_perm("jobs.run_job"):
            given = {name: run.params[name] for name in run_now_fields(job) if name in run.params}
            again = [(name, "true" if value is True else value) for name, value in given.items()]
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), "run_again": again})

    def get_urls(self) -> list[URLPattern]:
        run_now = self.admin_site.admin_view(require_POST(self.run_now_view))
        return [path("run/<str:name>/", run_now, name="jobs_run_now"), *super().get_urls()]

    def run_now_view(self, request: HttpRequest, name: str) -> HttpResponse:
        """Run now: the same runner as cron and the shell, trigger `admin`, the user recorded."""
        if not request.user.has_perm("jobs.run_job"):
            raise PermissionDenied
        if name not in JOBS:
            raise Http404("No such job")
        job = JOBS[name]
        back = reverse("admin:app_list", args=["jobs"])
        given = {field: request.POST[field] for field in run_now_fields(job) if request.POST.get(field)}
        try:
            params = clean(job.name, job.form, given)
        except ParamError as error:
            messages.error(request, f"{job.name}: {error.param}: {error.message}")
            return HttpResponseRedirect(back)
        run = run_job(job, params, trigger=Trigger.ADMIN, user=request.user, origin="admin")
        level = {
            Status.SUCCEEDED: messages.SUCCESS, Status.SKIPPED: messages.WARNING, Status.PARTIAL: messages.WARNING,
        }.get(Status(run.status), messages.ERROR)  # fmt: skip
        text = report.summary(run, max_errors=3)
        if run.status == Status.SKIPPED:
            text = f"{job.name} was not started: {run.skip_reason}."
        messages.add_message(request, level, text)
        return HttpResponseRedirect(reverse("admin:jobs_jobrun_change", args=[run.pk]))


def run_now_fields(job: Job) -> list[str]:
    """The job's parameters staff may set in Run now: all but the lock id."""
    return [name for name in job.form.parameters() if name != "lock_id"]


def run_now_form(job: Job) -> list[BoundField]:
    """The Run now fields. A choice of rows (a shop) with more than CHOICES_MAX of them is typed in, by id: a menu of
    a thousand shops made the overview half a second slower for every job that offers one."""
    form = job.form(auto_id=f"{job.name}-%s")
    for field in form.fields.values():
        if not isinstance(field, ModelChoiceField) or field.queryset is None:
            continue
        if field.queryset[: CHOICES_MAX + 1].count() > CHOICES_MAX:
            field.widget = TextInput(attrs={"placeholder": f"{field.empty_label or 'none'}, or an id", "size": 36})
    return [form[name] for name in run_now_fields(job)]


def _number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else ("-" if value is None else str(value))


def _change(new: Any, old: Any) -> str:
    """Flag a change worth a glance: to or from zero, or by more than half."""
    if not isinstance(new, int) or not isinstance(old, int) or new == old:
        return ""
    if old == 0 or new == 0 or abs(new - old) > max(abs(old), 1) / 2:
        return f"⚠ was {old:,}, now {new:,}"
    return ""


def _table(head: list[str], rows: list[tuple[Any, ...]]) -> SafeString:
    header = format_html_join("", "<th>{}</th>", ((cell,) for cell in head))
    body = format_html_join(
        "", "<tr>{}</tr>", ((format_html_join("", "<td>{}</td>", ((cell,) for cell in row)),) for row in rows)
    )
    return format_html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", header, body)


def overview_context(request: HttpRequest) -> dict[str, Any]:
    """What the jobs overview (the jobs app's admin page) shows."""
    now = timezone.now()
    rows = []
    began = ledger_began()  # once, for every job's 7-day rate and lateness
    healths = overview(now, recent=STRIP, began=began)
    for health in healths:
        last, success = health.last_run, health.last_success
        recent, failure = health.runs.recent[::-1], health.runs.last_failure
        rows.append(
            {
                "health": health,
                "schedules": schedules(health.job, now),
                "last_badge": badge(last.status) if last else None,
                "last_when": when_html(last.started_at, now, seconds=True) if last else None,
                "last_duration": how_long(last) if last else None,
                "last_headline": headline(last) if last else None,
                "success_when": when_html(success.started_at, now, seconds=True) if success else None,
                "strip": strip(recent),
                "sparkline": sparkline(recent),
                "week": week(health.job, now, began),
                "last_failure": failure,
                "last_failure_reason": reason(failure) if failure else "",
                "run_now": run_now_form(health.job),
            }
        )
    running = any(health.verdict == "running" for health in healths)
    return {
        "overview": rows,
        "now": utc(now, seconds=True),
        "can_run": request.user.has_perm("jobs.run_job"),
        "refresh": running,
    }


def schedules(job: Job, now: datetime) -> list[dict[str, Any]]:
    """Every schedule the job is declared with, the `also` ones too: in words, as cron, what its call asks
    (the kind of run, as the job names it, and the query) and when it next fires."""
    calls = ([(job.schedule, "")] if job.schedule else []) + list(job.also)
    rows = []
    for schedule, query in calls:
        named = report.kind(JobRun(job=job.name, params=asked(job, query), counters={}))
        upcoming = next(job.fires(now, schedule))
        rows.append(
            {
                "words": describe(schedule, job.timezone),
                "cron": schedule,
                "query": f"?{query}" if query else "",
                "kind": "" if named == "full" else named,
                "next": when_html(upcoming, now),
            }
        )
    return rows


def asked(job: Job, query: str) -> dict[str, Any]:
    """The parameters a declared cron call's query gives (`full=1` -> {"full": True}), as a run records them."""
    field = {job.form.query_name(name): name for name in job.form.parameters()}
    given = {field.get(key, key): value for key, value in parse_qsl(query, keep_blank_values=True)}
    return {name: value for name, value in clean(job.name, job.form, given).items() if value not in (None, False, "")}


RUN = "__run__"  # where a run's id goes in the link to its page


def strip(runs: list[JobRun]) -> SafeString:
    """The last runs, oldest first, as coloured cells: each says its status on hover and links to the run."""
    link = reverse("admin:jobs_jobrun_change", args=[RUN])  # once: a reverse() took 0.1 ms, 120 cells a page
    return format_html_join(
        "",
        '<a class="cell" href="{}" style="background:{}" title="#{} {} · {} · {}"><span>{}</span></a>',
        (
            (link.replace(RUN, str(run.pk)), COLOURS.get(Status(run.status), "#4b5563"), run.pk,
             run.status, timestamp(run.started_at), how_long(run), run.status)
            for run in runs
        ),
    )  # fmt: skip


def sparkline(runs: list[JobRun], width: int = 120, height: int = 24) -> SafeString:
    """The durations of the finished ones among these runs, as an inline SVG line (no JavaScript)."""
    took = [run.duration_ms for run in runs if run.duration_ms is not None and run.status != Status.SKIPPED]
    if len(took) < 2:
        return mark_safe("")
    low, high = min(took), max(took)
    step = width / (len(took) - 1)
    points = " ".join(
        f"{i * step:.1f},{height - 2 - (ms - low) / ((high - low) or 1) * (height - 4):.1f}"
        for i, ms in enumerate(took)
    )
    return format_html(
        '<svg class="sparkline" width="{}" height="{}" viewBox="0 0 {} {}" role="img" aria-label="{}">'
        '<polyline points="{}" fill="none" stroke="currentColor" stroke-width="1.5"/></svg>',
        width, height, width, height, f"durations of the last {len(took)} runs: {duration(low)} to {duration(high)}",
        points,
    )  # fmt: skip


from jobs import outbox_admin  # noqa: E402, F401  (the outbox's admin, a module of its own, beside this one)
