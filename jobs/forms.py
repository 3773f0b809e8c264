"""A job's parameters, declared once as a Django form.

The HTTP query (`?lockId=`), the command's options (`--lock-id`) and the admin's
Run now form are all derived from it. A value that is missing is not given; a
value that is given must be right ("" is not a number).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from django import forms
from django.core.exceptions import ValidationError

_TRUE, _FALSE = {"", "1", "true", "yes", "on"}, {"0", "false", "no", "off"}
COMMON = ("lock_id", "dry_run")  # the fields every job's form has (JobForm's); the runner reads them itself


class ParamError(ValueError):
    """A parameter a caller got wrong. `param` is the form field's name; `status` 400, or 404 for "no such"."""

    def __init__(self, param: str, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.param, self.message, self.status = param, message, status


class WholeNumberField(forms.Field):
    """Digits, with an optional leading minus: never "+5", " 5", "1e3" or non-ASCII digits.

    `cap`: larger values are brought down to it rather than refused. `default`: the value when not given.
    """

    widget = forms.TextInput

    def __init__(
        self, *, low: int, high: int | None = None, cap: int | None = None, default: int | None = None, **kwargs: Any
    ) -> None:
        self.low, self.high, self.cap, self.default = low, high, cap, default
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> int | None:
        if value is None:
            return self.default
        text = str(value)
        if not re.fullmatch(r"-?[0-9]+", text, flags=re.ASCII):
            raise ValidationError("must be a whole number", code="invalid")
        digits = text.lstrip("-")
        number = int(text) if len(digits) <= 20 else (-1 if text.startswith("-") else 1) * 10**20  # out of any range
        if number < self.low or (self.high is not None and number > self.high):
            bounds = f"from {self.low} to {self.high}" if self.high is not None else f">= {self.low}"
            raise ValidationError(f"must be {bounds}", code="out_of_range")
        return min(number, self.cap) if self.cap is not None else number

    def widget_attrs(self, widget: forms.Widget) -> dict[str, Any]:
        return {"inputmode": "numeric", **({"placeholder": self.default} if self.default is not None else {})}


class _Checkbox(forms.CheckboxInput):
    def value_from_datadict(self, data: Any, files: Any, name: str) -> Any:
        return data.get(name)  # as given: the field, not the widget, decides what is true ("maybe" is an error)


class TrueFalseField(forms.Field):
    """true/false, 1/0, yes/no, on/off; given without a value (`?dryRun`) it means true."""

    widget = _Checkbox

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> bool:
        if value is None or isinstance(value, bool):
            return bool(value)
        text = str(value).strip().lower()
        if text not in _TRUE | _FALSE:
            raise ValidationError("must be true or false", code="invalid")
        return text in _TRUE


class JobForm(forms.Form):
    """The parameters every job takes. A job with parameters of its own declares a subclass.

    `query_names`: a field's name in the HTTP query where it is not the field's name
    in camelCase. `scope`: fields that narrow a run to part of the job's work (such a
    run never counts as the job's last success, and never sets or takes a resume point).
    """

    lock_id = WholeNumberField(low=-(2**63), high=2**63 - 1, help_text="use this lock id instead of the job's")
    dry_run = TrueFalseField(help_text="do the work, then roll it back")

    query_names: ClassVar[dict[str, str]] = {}
    scope: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def parameters(cls) -> dict[str, forms.Field]:
        """The form's fields, the job's own first, then those every job takes."""
        own = {name: field for name, field in cls.base_fields.items() if name not in COMMON}
        return own | {name: cls.base_fields[name] for name in COMMON}

    @classmethod
    def query_name(cls, field: str) -> str:
        head, *rest = field.split("_")
        return cls.query_names.get(field) or head + "".join(word.title() for word in rest)


def option_name(field: str) -> str:
    """A field's command-line option: lock_id -> --lock-id."""
    return "--" + field.replace("_", "-")


def clean(job_name: str, form: type[JobForm], data: Mapping[str, Any]) -> dict[str, Any]:
    """The cleaned parameters, or ParamError naming the first wrong one (in the form's order).

    `data` holds only what the caller gave, by field name.
    """
    for name in data:
        if name not in form.base_fields:
            raise ParamError(name, f"{job_name} does not take a {name.replace('_', ' ')}")
    bound = form(data)
    if not bound.is_valid():
        errors = bound.errors.as_data()
        name = next((name for name in form.parameters() if name in errors), "params")  # else a form-wide error
        error = (errors.get(name) or next(iter(errors.values())))[0]
        raise ParamError(name, error.messages[0], status=404 if error.code == "not_found" else 400)
    return bound.cleaned_data


def fields_of(forms_: Iterable[type[JobForm]]) -> dict[str, forms.Field]:
    """Every field of these forms by name, first declaration first (for `run_job`'s options, the query names)."""
    fields: dict[str, forms.Field] = {}
    for form in forms_:
        for name, field in form.parameters().items():
            fields.setdefault(name, field)
    return fields
