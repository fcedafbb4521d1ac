"""The public surface of `protocol.mla`: every module lists what it exports, and it exists."""

import importlib
import pkgutil

import protocol.mla
from protocol.mla import CONTENT_MODELS, MessageType
from protocol.model import FrozenModel

PUBLIC_MODULES = [
    info.name
    for info in pkgutil.iter_modules(protocol.mla.__path__, "protocol.mla.")
    if not info.name.split(".")[-1].startswith("_")
]


def test_every_public_module_lists_its_exports() -> None:
    """Each public module of the package has an `__all__` whose names all exist."""
    assert PUBLIC_MODULES
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        assert hasattr(module, "__all__"), name
        missing = [export for export in module.__all__ if not hasattr(module, export)]
        assert not missing, (name, missing)


def test_the_package_re_exports_the_names_other_code_uses() -> None:
    """The names other parts of the project import from `protocol.mla` are there."""
    expected = {
        "MessageType",
        "CONTENT_MODELS",
        "MessageDocument",
        "validate_document",
        "document_json_schema",
        "CaseState",
        "Role",
        "CaseTracker",
        "CaseView",
        "replay_case",
        "allowed_message_types",
        "document_warnings",
    }
    assert expected <= set(protocol.mla.__all__)
    assert all(hasattr(protocol.mla, name) for name in protocol.mla.__all__)


def test_every_message_type_has_its_own_frozen_content_model() -> None:
    """Each message type maps to a distinct FrozenModel subclass that refuses unknown fields."""
    assert set(CONTENT_MODELS) == set(MessageType)
    assert len(set(CONTENT_MODELS.values())) == len(MessageType)
    for model in CONTENT_MODELS.values():
        assert issubclass(model, FrozenModel)
        assert model.model_config.get("extra") == "forbid"
        assert model.model_config.get("frozen") is True
        assert model.model_config.get("strict") is True


def test_message_types_include_the_draft_catalogue_and_note() -> None:
    """All 24 types of the draft schema's MessageType enumeration, and NOTE, are known."""
    draft = {
        "MLA_REQUEST", "SUPPLEMENTARY_REQUEST", "ADDITIONAL_INFORMATION", "CONDITIONS_RESPONSE", "STATUS_INQUIRY",
        "WITHDRAWAL", "USE_CONSENT_REQUEST", "EXCULPATORY_DISCLOSURE_NOTICE", "ACKNOWLEDGEMENT",
        "REQUEST_FOR_ADDITIONAL_INFORMATION", "CONSULTATION", "EXECUTION_DECISION", "POSTPONEMENT", "RESUMPTION",
        "DELAY_NOTICE", "STATUS_REPORT", "PARTIAL_EXECUTION", "FINAL_EXECUTION", "REFUSAL", "CONFIDENTIALITY_NOTICE",
        "USE_CONSENT_DECISION", "RETURN_OF_MATERIAL", "CLOSURE", "CORRESPONDENCE",
    }  # fmt: skip
    assert {message_type.value for message_type in MessageType} == draft | {"NOTE"}
