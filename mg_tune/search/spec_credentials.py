"""A spec's credentials leave its URIs before anything is started or written (issue 16 point 4).

:func:`move_spec_credentials` is the spec's side of the one boundary,
:func:`mg_tune.tracking.move_credentials`: every URI field of a
:class:`~mg_tune.search.spec.SearchSpec` and the YAML text it was read from
lose their passwords, which go where the libraries read them.
"""

from __future__ import annotations

from mg_tune.search.spec import SearchSpec

URI_FIELDS = ("tracking_uri", "study_storage", "storage_path")
"""The spec's fields that name a store; a password in one leaves it in :func:`move_spec_credentials`."""


def move_spec_credentials(spec: SearchSpec, text: str) -> tuple[SearchSpec, str]:
    """``spec`` and its YAML ``text`` with each URI field passed through :func:`mg_tune.tracking.move_credentials`.

    The text gets the stripped URI wherever the original stood, so the
    ``spec.yaml`` logged to MLflow holds no password either (what is not
    written literally there is masked when it is logged,
    :func:`mg_tune.tracking.start_search`).

    Raises:
        ValueError: a secret that cannot be moved (``"<field> <uri>: ..."``, no password in it).
    """
    from mg_tune.tracking import move_credentials

    update = {}
    for field in URI_FIELDS:
        value = getattr(spec, field)
        if value:
            stripped = move_credentials(value, field)
            if stripped != value:
                update[field] = stripped
                text = text.replace(value, stripped)
    return (spec.model_copy(update=update) if update else spec), text
