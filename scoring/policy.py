"""Booking policy: what a shop requires of a customer of each tier before an online booking.

The app decides; taking the card or the deposit stays with the booking or payment platform. A shop has a
row (BookingPolicy) only for a tier it changed; every other tier has the default below.
"""

from __future__ import annotations

from dataclasses import dataclass

from scoring.models import Requirement, Tier

# Nothing asked of reliable, watch and new customers; a card on file of risky ones.
DEFAULTS: dict[str, Requirement] = {
    Tier.RELIABLE: Requirement.NOTHING,
    Tier.WATCH: Requirement.NOTHING,
    Tier.NEW: Requirement.NOTHING,
    Tier.RISKY: Requirement.CARD,
}


@dataclass(frozen=True)
class Policy:
    tier: str
    requirement: str
    deposit_percent: int | None = None
    default: bool = False  # the shop has no row for this tier

    @property
    def label(self) -> str:
        if self.requirement == Requirement.DEPOSIT:
            return f"Deposit of {self.deposit_percent} %"
        return Requirement(self.requirement).label

    def as_json(self) -> dict[str, object]:
        return {
            "tier": self.tier,
            "requirement": self.requirement,
            "depositPercent": self.deposit_percent,
            "onlineBooking": self.requirement != Requirement.NO_ONLINE_BOOKING,
            "label": self.label,
            "default": self.default,
        }


def policy_for(tier: str, requirement: str | None, deposit_percent: int | None) -> Policy:
    """The shop's row for the tier (requirement and percent, as read), or the default when it has none."""
    if requirement is None:
        return Policy(tier, DEFAULTS[tier], default=True)
    return Policy(tier, requirement, deposit_percent)
