from __future__ import annotations

import uuid
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import connections, models, transaction
from django.db.models import F, Q
from django.utils import timezone

from jobs.models import JobRun
from jobs.timefmt import utc


class Outcome(models.TextChoices):
    PENDING = "pending"
    ATTENDED = "attended"
    NO_SHOW = "no_show", "No-show"
    LATE_CANCEL = "late_cancel", "Late cancel"
    CANCELLED = "cancelled"


class Tier(models.TextChoices):
    NEW = "new"
    RELIABLE = "reliable"
    WATCH = "watch"
    RISKY = "risky"


class Shop(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    grace_days = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="Forgive a customer's no-show by itself when they had no other in this many days before it "
        "(applied by recompute-scores). Empty: off.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Customer(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="customers")
    name = models.CharField(max_length=200)
    email = models.EmailField(blank=True)
    phone = models.CharField(max_length=40, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # A tier staff set by hand (scoring.adjustments): the effective tier while `pinned_until` (a UTC date,
    # inclusive) has not passed; the computed score is kept. The reason is in the adjustment log.
    pinned_tier = models.CharField(max_length=16, choices=Tier.choices, blank=True, default="", db_default="")
    pinned_until = models.DateField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Appointment(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="appointments")
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="appointments")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    checked_in_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.PENDING)
    resolved_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # Counts in no score (scoring.adjustments); who forgave it, when and why is in the adjustment log.
    forgiven = models.BooleanField(default=False, db_default=False)

    class Meta:
        ordering = ["-starts_at"]
        indexes = [
            # recompute-scores: one customer's window, read from the index alone (forgiven ones count in no
            # score; the column fits in the entries' alignment padding).
            models.Index(fields=["customer", "starts_at", "outcome", "forgiven"], name="appt_customer_window"),
            # recompute-scores: the appointments that crossed an edge of the window since the last run, and
            # what they count as, read from the index alone.
            models.Index(
                fields=["starts_at", "customer", "outcome", "forgiven"],
                condition=~Q(outcome="pending"),
                name="appt_window_edge",
            ),
            # resolve-outcomes: the oldest finished appointments still pending.
            models.Index(fields=["ends_at"], condition=Q(outcome="pending"), name="appt_pending_by_end"),
            models.Index(fields=["shop", "starts_at"], name="appt_shop_start"),
            # offer-loop: the open slots are future cancellations, read without the history's.
            models.Index(fields=["starts_at"], condition=Q(cancelled_at__isnull=False), name="appt_cancelled_by_start"),
            # offer-loop: whether a customer is busy at a slot's time, from their appointments ending after its start.
            models.Index(
                fields=["customer", "ends_at"],
                condition=Q(cancelled_at__isnull=True),
                name="appt_customer_busy",
                include=["starts_at"],
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(outcome__in=Outcome.values), name="appt_outcome_valid"),
            models.CheckConstraint(condition=Q(ends_at__gt=F("starts_at")), name="appt_ends_after_start"),
            models.CheckConstraint(
                condition=~Q(outcome__in=[Outcome.LATE_CANCEL, Outcome.CANCELLED]) | Q(cancelled_at__isnull=False),
                name="appt_cancel_outcome_has_time",
            ),
            models.CheckConstraint(
                condition=Q(outcome=Outcome.PENDING, resolved_at__isnull=True)
                | (~Q(outcome=Outcome.PENDING) & Q(resolved_at__isnull=False)),
                name="appt_resolved_iff_not_pending",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.customer} at {utc(self.starts_at)}"

    def clean(self) -> None:
        if self.customer_id and self.shop_id and self.customer.shop_id != self.shop_id:
            raise ValidationError({"customer": "The customer belongs to another shop."})
        if self.cancelled_at is None and not self._state.adding and self._taken_through_an_offer():
            raise ValidationError(
                {
                    "cancelled_at": "This slot was given to a waiting customer (their offer was accepted): "
                    "undoing the cancellation would book two customers at the same time."
                }
            )

    def _taken_through_an_offer(self) -> bool:
        """Whether the stored row is a cancelled slot that a waiting customer accepted.

        Inside a transaction (the admin saves in one) the stored row is locked first, until the save
        commits: an accept of this slot running meanwhile (it locks the slot's row too) either commits
        first and is seen here, or waits and then sees the cancellation undone, and refuses.
        """
        stored = Appointment.objects.filter(pk=self.pk, cancelled_at__isnull=False)
        if transaction.get_connection().in_atomic_block:
            stored = stored.select_for_update(no_key=True)
        if not stored.values_list("pk").first():
            return False
        return SlotOffer.objects.filter(slot_id=self.pk, status=OfferStatus.ACCEPTED).exists()


class Action(models.TextChoices):
    FORGIVE = "forgive"
    UNFORGIVE = "unforgive", "Undo forgive"
    PIN = "pin", "Pin tier"
    UNPIN = "unpin", "End pin"


class Adjustment(models.Model):
    """The append-only log of what staff (or a shop's grace rule) changed by hand: every forgiveness, undo
    and pin, with who, when and why. Rows outlive their customer and appointment (ids, no foreign keys in
    the database)."""

    id = models.BigAutoField(primary_key=True)
    at = models.DateTimeField(default=timezone.now, editable=False)
    by = models.CharField(max_length=150, help_text="The staff user, or the shop's grace rule.")
    action = models.CharField(max_length=16, choices=Action.choices)
    shop = models.ForeignKey(Shop, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")
    customer = models.ForeignKey(Customer, on_delete=models.DO_NOTHING, db_constraint=False, related_name="adjustments")
    appointment = models.ForeignKey(
        Appointment, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="adjustments"
    )
    tier = models.CharField(max_length=16, choices=Tier.choices, blank=True)
    until = models.DateField(null=True, blank=True)
    reason = models.TextField()

    class Meta:
        ordering = ["-at", "-id"]
        permissions = [
            ("forgive", "Can forgive a no-show or late cancel"),
            ("pin_tier", "Can pin a customer's tier"),
        ]
        indexes = [
            models.Index(fields=["customer", "-at"], name="adjustment_customer"),
            models.Index(fields=["-at", "-id"], name="adjustment_newest_first"),  # the admin's list
        ]

    def __str__(self) -> str:
        return f"{self.get_action_display()} by {self.by} at {utc(self.at)}"


class CustomerScore(models.Model):
    """Derived data: written only by the recompute-scores job."""

    customer = models.OneToOneField(Customer, on_delete=models.CASCADE, primary_key=True, related_name="score")
    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="scores")
    score = models.PositiveSmallIntegerField()
    tier = models.CharField(max_length=16, choices=Tier.choices)
    attended = models.PositiveIntegerField()
    no_shows = models.PositiveIntegerField()
    late_cancels = models.PositiveIntegerField()
    cancellations = models.PositiveIntegerField()
    last_appointment_at = models.DateTimeField(null=True, blank=True)
    window_days = models.PositiveSmallIntegerField()
    computed_at = models.DateTimeField(help_text="The run whose result last changed this row.")
    # Which run that was. Runs are pruned after JOB_RUNS_RETENTION_DAYS while a score may stay unchanged for
    # longer: an id, not a foreign key in the database (and no index: a run changes it).
    run = models.ForeignKey(
        JobRun, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False,
        related_name="+", help_text="The run whose result last changed this row (empty: written outside a run).",
    )  # fmt: skip

    class Meta:
        # No index on a column a run changes: on PostgreSQL, with the room fillfactor 80 leaves in each page
        # (migration 0009), a changed score is a heap-only update, which writes no index.
        constraints = [
            models.CheckConstraint(condition=Q(score__gte=0, score__lte=100), name="score_in_range"),
            models.CheckConstraint(condition=Q(tier__in=Tier.values), name="score_tier_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.customer_id}: {self.score} ({self.tier})"


class UTCDate(models.Func):
    """A time's day in UTC, as both databases can index it (SQLite's own date(), not a function of Django's that
    another client of the file would not have)."""

    arity = 1
    output_field = models.DateField()
    template = "((%(expressions)s AT TIME ZONE 'UTC')::date)"

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, Any]:
        return super().as_sql(compiler, connection, template="date(%(expressions)s)", **extra)


def cascade_unless_postgresql(collector: Any, field: Any, sub_objs: Any, using: str) -> None:
    """CASCADE, except on PostgreSQL, where the database deletes the score history with its customer (a trigger,
    migration 0017), a probe per day: Django's own DELETE looked for it by customer, which no index answers (0022)."""
    if connections[using].vendor != "postgresql":
        models.CASCADE(collector, field, sub_objs, using)


cascade_unless_postgresql.lazy_sub_objs = True  # type: ignore[attr-defined]  # Django: not read beforehand


class ScoreChange(models.Model):
    """A customer's score or tier changed: appended by a database trigger on the scores (migration 0014), in
    the statement that changed it, whoever wrote it; with what it was before, so that the history reads
    without its first row. A first score is not a change (a full pass from nothing writes no history).
    Pruned after JOB_RUNS_RETENTION_DAYS (scoring.history)."""

    id = models.BigAutoField(primary_key=True)
    # On PostgreSQL the database deletes a customer's history with them (a trigger, migration 0017), as their score.
    customer = models.ForeignKey(
        Customer, on_delete=cascade_unless_postgresql, db_constraint=False, db_index=False, related_name="score_changes"
    )
    at = models.DateTimeField(help_text="The `now` of the run that computed it.")
    score = models.PositiveSmallIntegerField()
    tier = models.CharField(max_length=16, choices=Tier.choices)
    previous_score = models.PositiveSmallIntegerField()
    previous_tier = models.CharField(max_length=16, choices=Tier.choices)
    run = models.ForeignKey(
        JobRun, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False,
        related_name="+", help_text="The run that computed it (empty: written outside a run).",
    )  # fmt: skip

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            # A customer's changes, by day: a run's changes all fall in the index's newest day, a few pages, instead of
            # a page each wherever its customer sorts (migration 0022). Read one probe per day (scoring.history).
            models.Index(UTCDate("at"), "customer", name="score_change_day"),
            models.Index(fields=["at"], name="score_change_at"),  # pruning, and the changes later than a time
        ]

    def __str__(self) -> str:
        return f"{self.customer_id}: {self.previous_score} -> {self.score} ({self.tier}) at {utc(self.at)}"


class CustomerChange(models.Model):
    """A write that may have changed a customer's score, appended by database triggers whoever writes (the
    ORM, bulk updates, raw SQL, another service): an insert, delete or change of outcome, start or customer
    of an appointment that is or was resolved (a pending one counts in no score), a new customer, a move to
    another shop.

    Append-only, with no key and no index (migration 0009 creates it so), so that a mark costs a writer
    one appended row: a customer appears once per change, and `customer_id` is the primary key only in
    Django's eyes. Each run of recompute-scores moves these rows into DirtyCustomer first, in one statement.
    """

    customer_id = models.UUIDField(primary_key=True)

    def __str__(self) -> str:
        return str(self.customer_id)


class DirtyCustomer(models.Model):
    """A customer whose score recompute-scores must compute again: moved here from CustomerChange by the
    runs (and only by them), cleared in the transaction that stores the customer's new score."""

    customer_id = models.UUIDField(primary_key=True)

    def __str__(self) -> str:
        return str(self.customer_id)


class ScoringState(models.Model):
    """One row: what the last runs of recompute-scores left, so the next one knows what to do. Changed by
    one run at a time (scoring.scores.STATE), and by triggers: a TRUNCATE of a table the scores come from
    or go to makes the next run a full pass."""

    last_now = models.DateTimeField(
        null=True, blank=True, help_text="The window's end: every stored score not marked dirty is exact at it."
    )
    last_full_at = models.DateTimeField(null=True, blank=True, help_text="`now` of the last full pass that finished.")
    window_days = models.PositiveSmallIntegerField(null=True, blank=True, help_text="The window of that full pass.")
    rule_version = models.PositiveSmallIntegerField(null=True, blank=True, help_text="The rule of that full pass.")
    pass_started_at = models.DateTimeField(null=True, blank=True, help_text="`now` of a full pass cut short.")
    pass_after = models.UUIDField(null=True, blank=True, help_text="The last customer that pass scored.")
    pass_window_days = models.PositiveSmallIntegerField(null=True, blank=True, help_text="The window of that pass.")
    pass_rule_version = models.PositiveSmallIntegerField(null=True, blank=True, help_text="The rule of that pass.")

    def __str__(self) -> str:
        return f"last run at {self.last_now}, last full pass at {self.last_full_at}"


class WaitlistEntry(models.Model):
    """A customer waiting for a freed slot at a shop; closed when they accept one."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="waitlist")
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="waitlist_entries")
    created_at = models.DateTimeField(default=timezone.now, help_text="Waiting since; breaks ties in the ranking.")
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "waitlist entries"
        ordering = ["created_at"]
        indexes = [
            models.Index(fields=["shop", "created_at"], condition=Q(closed_at__isnull=True), name="waitlist_open")
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["shop", "customer"], condition=Q(closed_at__isnull=True), name="waitlist_one_open_per_customer"
            )
        ]

    def __str__(self) -> str:
        return f"{self.customer} waiting at {self.shop}"


class OfferStatus(models.TextChoices):
    PENDING = "pending"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"  # refused at accept (the slot or the customer could no longer take it), or by 0004


class SlotOffer(models.Model):
    """A freed slot (a cancelled appointment still in the future) offered to one waiting customer."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    slot = models.ForeignKey(Appointment, on_delete=models.CASCADE, related_name="offers")
    # Offers are history (who was given which slot): deleting a waitlist entry keeps its offers, and an accepted
    # one keeps its slot taken. The database does the same for raw deletes (migration 0010).
    entry = models.ForeignKey(WaitlistEntry, null=True, on_delete=models.SET_NULL, related_name="offers")
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="offers")
    status = models.CharField(max_length=16, choices=OfferStatus.choices, default=OfferStatus.PENDING)
    offered_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    responded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-offered_at"]
        indexes = [models.Index(fields=["expires_at"], condition=Q(status="pending"), name="offer_pending_by_expiry")]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=OfferStatus.values), name="offer_status_valid"),
            # A slot has at most one live offer, pending or accepted: never two customers at once, and
            # never offered again once taken. A customer waits on at most one offer at a time, and is
            # never offered the same slot twice.
            models.UniqueConstraint(
                fields=["slot"], condition=Q(status__in=["pending", "accepted"]), name="offer_one_live_per_slot"
            ),
            models.UniqueConstraint(
                fields=["customer"], condition=Q(status="pending"), name="offer_one_pending_per_customer"
            ),
            models.UniqueConstraint(fields=["slot", "customer"], name="offer_once_per_customer"),
        ]

    def __str__(self) -> str:
        return f"{self.slot} offered to {self.customer} ({self.status})"


class OfferWatermark(models.Model):
    """Per shop, how many writes so far could have given one of its open slots a candidate: a customer starting
    (again) to wait there; a customer waiting there freed of a pending offer, of an offer made before (deleted)
    or of an appointment (cancelled, moved, deleted); one of its slots open again (its live offer ended).
    Counted by database triggers whoever writes (migration 0018), so that an offer run examines again a slot
    it found exhausted only when its shop's count moved."""

    shop_id = models.UUIDField(primary_key=True)
    changes = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.shop_id}: {self.changes}"


class ExhaustedSlot(models.Model):
    """An open slot an offer run found nobody could take, and what that finding depends on: its shop's
    OfferWatermark count read in the same statement, and the slot's own shop, customer, times and cancellation.
    While all of them are unchanged, nobody can take it (scoring.offers._takeable)."""

    slot_id = models.UUIDField(primary_key=True)
    changes = models.BigIntegerField()
    shop_id = models.UUIDField()
    customer_id = models.UUIDField()
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    cancelled_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.slot_id} exhausted at {self.changes}"


class Requirement(models.TextChoices):
    """What a shop asks of a customer before an online booking (scoring.policy); the booking or payment platform
    does the asking."""

    NOTHING = "nothing"
    CARD = "card", "Card on file"
    DEPOSIT = "deposit", "Deposit"
    CONFIRMATION = "confirmation", "Staff confirmation"
    NO_ONLINE_BOOKING = "no_online_booking", "No online booking"


class BookingPolicy(models.Model):
    """What a shop requires of the customers of one tier. A shop without a row for a tier has the default
    (scoring.policy.DEFAULTS), so a shop needs rows only for what it changed."""

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="booking_policies")
    tier = models.CharField(max_length=16, choices=Tier.choices)
    requirement = models.CharField(max_length=24, choices=Requirement.choices)
    deposit_percent = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="Of the price, 1 to 100: only for a deposit.",
    )

    class Meta:
        verbose_name_plural = "booking policies"
        ordering = ["shop", "tier"]
        constraints = [
            models.UniqueConstraint(fields=["shop", "tier"], name="policy_one_per_shop_and_tier"),
            models.CheckConstraint(condition=Q(tier__in=Tier.values), name="policy_tier_valid"),
            models.CheckConstraint(condition=Q(requirement__in=Requirement.values), name="policy_requirement_valid"),
            models.CheckConstraint(
                condition=Q(
                    requirement=Requirement.DEPOSIT,
                    deposit_percent__isnull=False,
                    deposit_percent__gte=1,
                    deposit_percent__lte=100,
                )
                | (~Q(requirement=Requirement.DEPOSIT) & Q(deposit_percent__isnull=True)),
                name="policy_deposit_has_percent",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.shop}: {self.tier}"

    def clean(self) -> None:
        if self.requirement == Requirement.DEPOSIT and self.deposit_percent is None:
            raise ValidationError({"deposit_percent": "A deposit needs its percent of the price (1 to 100)."})
        if self.requirement != Requirement.DEPOSIT:
            self.deposit_percent = None  # a percent left over from a deposit means nothing now


class Evaluation(models.Model):
    """What a rule's tiers at a past date predicted for one shop (scoring.evaluation): written by evaluate-scores,
    one row per shop and run (and by compare_rules, never: it only prints)."""

    id = models.BigAutoField(primary_key=True)
    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="evaluations")
    at = models.DateField(help_text="T: the rule scored every customer on the history before this day (UTC).")
    computed_at = models.DateTimeField(help_text="The run's `now`: what happened from T until then.")
    rule = models.CharField(max_length=40)
    window_days = models.PositiveSmallIntegerField()
    customers = models.PositiveIntegerField(help_text="Customers with an appointment since T.")
    appointments = models.PositiveIntegerField(help_text="Their resolved appointments since T.")
    missed = models.PositiveIntegerField(help_text="Of those, no-shows and late cancels.")
    auc = models.FloatField(null=True, blank=True, help_text="Empty when every customer missed, or none did.")
    tier_changes = models.PositiveIntegerField(help_text="Customers whose tier now differs from their tier at T.")
    tiers = models.JSONField(help_text="Per tier at T: customers, appointments, missed, customers who missed any.")

    class Meta:
        ordering = ["-computed_at", "shop"]
        indexes = [models.Index(fields=["shop", "-computed_at"], name="evaluation_shop_latest")]

    def __str__(self) -> str:
        return f"{self.shop}: {self.rule} at {self.at}"
