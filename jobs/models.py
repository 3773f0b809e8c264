from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q


class Trigger(models.TextChoices):
    CRON = "cron", "Vercel Cron / HTTP"
    CLI = "cli", "Shell"
    ADMIN = "admin", "Admin"
    INTERNAL = "internal", "Internal call"


class Status(models.TextChoices):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"  # finished, but some items failed or the time budget ran out
    FAILED = "failed"  # the job itself raised; see traceback
    SKIPPED = "skipped"  # another run held the lock
    ABANDONED = "abandoned"  # the process died mid-run; noticed by a later run


class JobRun(models.Model):
    """The ledger: one row per attempt to run a job, whatever started it."""

    job = models.CharField(max_length=64)
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    params = models.JSONField(default=dict, blank=True)
    counters = models.JSONField(default=dict, blank=True)
    errors = models.JSONField(default=list, blank=True)
    error_count = models.PositiveIntegerField(default=0)
    traceback = models.TextField(blank=True)
    lock_id = models.BigIntegerField()
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    origin = models.CharField(
        max_length=255, blank=True, help_text="Who or what asked: host and process, or the HTTP caller."
    )
    held_by = models.CharField(
        max_length=100, blank=True, help_text="Skipped runs: who held the lock (a run of ours, or another session)."
    )
    held = models.CharField(
        max_length=100, blank=True, help_text="Skipped runs: what was held, when not the job's lock (the job names it)."
    )
    real = models.BooleanField(
        default=True,
        db_default=True,
        editable=False,
        help_text="Not a dry run nor narrowed to part of the work (a shop): only real runs count for the job's health.",
    )

    class Meta:
        ordering = ["-started_at", "-id"]
        permissions = [("run_job", "Can run a job now")]
        indexes = [
            # A job's latest runs of any kind, in the ledger's order (the overview's strip: an ORDER BY ... LIMIT that
            # this index answers exactly, so that the planner never scans the whole ledger's by time instead).
            models.Index(fields=["job", "-started_at", "-id"], name="jobrun_job_recent"),
            models.Index(fields=["-started_at"], name="jobrun_recent"),
            models.Index(fields=["job"], condition=Q(status="running"), name="jobrun_running"),
            # Health and the overview read a few of each job's latest real runs; these answer each question with the
            # first entries of an index, however many runs (skipped, dry, for one shop) the ledger holds.
            models.Index(
                fields=["job", "-started_at", "-id"],
                condition=Q(real=True) & ~Q(status="skipped"),
                name="jobrun_last_real",
            ),
            models.Index(
                fields=["job", "-started_at", "-id"],
                condition=Q(real=True, status="succeeded"),
                name="jobrun_last_success",
            ),
            models.Index(
                fields=["job", "-started_at", "-id"],
                condition=Q(real=True, status__in=["failed", "abandoned", "partial"]),
                name="jobrun_last_failure",
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=Status.values), name="jobrun_status_valid"),
            models.CheckConstraint(condition=Q(trigger__in=Trigger.values), name="jobrun_trigger_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.job} #{self.pk} ({self.status})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self._state.adding:  # whether the run is real follows from what it was asked, once, when it is recorded
            self.real = is_real(self.job, self.params)
        super().save(*args, **kwargs)

    @property
    def skip_reason(self) -> str:
        """Why a skipped run did not start: what was held, and by whom."""
        return f"{self.held or f'lock {self.lock_id}'} is held by {self.held_by or 'another run'}"


def is_real(job: str, params: dict[str, Any]) -> bool:
    """Whether a run with these parameters (as recorded) does the job's whole work for real: not a dry run, and not
    narrowed by one of the fields its form names in `scope`."""
    from jobs.registry import JOBS  # the registry knows each job's scope; it imports no model

    declared = JOBS.get(job)
    scope = declared.form.scope if declared else ()
    return not params.get("dry_run") and not any(params.get(name) not in (None, "") for name in scope)


class JobLease(models.Model):
    """A lock on databases without advisory locks (SQLite): see jobs/locks.py."""

    lock_id = models.BigIntegerField(primary_key=True)
    owner = models.CharField(max_length=64)
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"lock {self.lock_id} held by {self.owner} until {self.expires_at:%Y-%m-%d %H:%M:%S}"


class JobAlert(models.Model):
    """A job's alert state: one row per job. Changed only by a conditional update on `version`,
    so that of several processes checking at once exactly one sends each message (jobs/alerts.py)."""

    job = models.CharField(max_length=64, primary_key=True)
    version = models.PositiveBigIntegerField(default=0)
    verdict = models.CharField(max_length=16, default="ok", help_text="ok, or what opened the incident")
    opened_at = models.DateTimeField(null=True, blank=True, help_text="When the open incident began.")
    notified_at = models.DateTimeField(null=True, blank=True, help_text="The last message sent about it.")
    undelivered = models.JSONField(default=dict, blank=True, help_text="A message to send again, and where.")

    def __str__(self) -> str:
        return f"{self.job}: {self.verdict}"


class Channel(models.TextChoices):
    EMAIL = "email", "e-mail"
    WEBHOOK = "webhook", "webhook"
    CHECKIN = "checkin", "check-in"  # a start or end signal to an outside monitor (jobs/checkins.py)


class OutboxMessage(models.Model):
    """A message to the outside (an alert, a check-in) on one channel: written in the transaction that decided it, and
    delivered afterwards by whichever process checks next, under a lease, with retries (jobs/outbox.py).

    Its id goes with it (`id` in the webhook's JSON, the e-mail's Message-ID), the same on every attempt,
    so that a receiver can drop a repeat: delivery is at least once.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    job = models.CharField(max_length=64)
    kind = models.CharField(
        max_length=16, help_text="opened, reminder or recovered; a check-in's start, success or fail"
    )
    channel = models.CharField(max_length=16, choices=Channel.choices)
    content = models.JSONField(help_text="The message itself (jobs.outbox.Message), as it was decided.")
    created_at = models.DateTimeField()
    attempts = models.PositiveIntegerField(default=0, help_text="Attempts started (claims), the last one included.")
    next_attempt_at = models.DateTimeField(help_text="Not tried again before this (the backoff).")
    lease_until = models.DateTimeField(
        null=True, blank=True, help_text="Being sent: no other process takes it before this."
    )
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True, help_text="Why the last failed attempt failed.")

    class Meta:
        ordering = ["-created_at", "id"]
        indexes = [
            # Every check reads the messages still to send: a small index, whatever the number delivered.
            models.Index(fields=["created_at"], condition=Q(delivered_at__isnull=True), name="outbox_waiting"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(channel__in=Channel.values), name="outbox_channel_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.job} {self.kind} by {self.channel} ({self.pk})"
