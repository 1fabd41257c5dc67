"""Validation errors as the command line prints them: one readable line, field by field."""

from django.core.exceptions import ValidationError


def describe(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return "; ".join(f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items())
    return " ".join(exc.messages)
